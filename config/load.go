package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envOverrides are the environment variables that override keys of the file,
// applied after it; an empty variable overrides nothing.
var envOverrides = []struct {
	name string
	key  string
	set  func(*Config, string)
}{
	{"STREAMGATE_LISTEN", "listen", func(c *Config, v string) { c.Listen = v }},
	{"STREAMGATE_PUBLIC_URL", "public_url", func(c *Config, v string) { c.PublicURL = v }},
	{"STREAMGATE_LOG_LEVEL", "log.level", func(c *Config, v string) { c.Log.Level = v }},
	{"STREAMGATE_LOG_FORMAT", "log.format", func(c *Config, v string) { c.Log.Format = v }},
	{"STREAMGATE_STREAM_ACCOUNT_ID", "stream.account_id", func(c *Config, v string) { c.Stream.AccountID = v }},
	{"STREAMGATE_STREAM_DELIVERY_URL", "stream.delivery_url", func(c *Config, v string) { c.Stream.DeliveryURL = v }},
	{"STREAMGATE_STREAM_SIGNING_KEY_ID", "stream.signing_key_id", func(c *Config, v string) { c.Stream.SigningKeyID = v }},
	{"STREAMGATE_LEDGER_DRIVER", "ledger.driver", func(c *Config, v string) { c.Ledger.Driver = v }},
	{"STREAMGATE_LEDGER_PATH", "ledger.path", func(c *Config, v string) { c.Ledger.Path = v }},
	{"STREAMGATE_ADMIN_LISTEN", "admin.listen", func(c *Config, v string) { c.Admin.Listen = v }},
}

// EnvOverrides returns the environment variables that override keys, as
// variable name → dotted key.
func EnvOverrides() map[string]string {
	m := make(map[string]string, len(envOverrides))
	for _, o := range envOverrides {
		m[o.name] = o.key
	}
	return m
}

// Load reads the YAML file at path and returns the configuration: the defaults,
// then the file, then the environment overrides (see EnvOverrides), validated
// and with its secrets resolved. getenv looks up both overrides and env
// secrets; nil means os.Getenv.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data, getenv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// LoadKeys is Load for a command that reads only keys: the configuration is
// made as Load makes it (defaults, the file, the environment, the secrets
// Validate could resolve), and only problems in keys fail it. Unknown keys and
// YAML errors fail it whatever they name. `streamgate keys create` runs before
// the signing key it creates is configured this way.
func LoadKeys(path string, getenv func(string) string, keys []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Default()
	if err := decode(data, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.applyEnv(getenv)
	if err := c.Validate(getenv); err != nil {
		var all Errors
		if !errors.As(err, &all) {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		var mine Errors
		for _, p := range all {
			if slices.Contains(keys, p.Key) {
				mine = append(mine, p)
			}
		}
		if len(mine) > 0 {
			return nil, fmt.Errorf("config %s: %w", path, mine)
		}
	}
	return &c, nil
}

// Parse is Load on the file's contents. An empty document is all defaults.
func Parse(data []byte, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Default()
	if err := decode(data, &c); err != nil {
		return nil, err
	}
	c.applyEnv(getenv)
	if err := c.Validate(getenv); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyEnv(getenv func(string) string) {
	for _, o := range envOverrides {
		if v := getenv(o.name); v != "" {
			o.set(c, v)
		}
	}
}

// decode decodes the single YAML document in data over c, refusing unknown
// keys. Unknown keys are found first, by walking the document along the
// Config type, to report each by its dotted key and line; the strict decoder
// then reports type errors.
func decode(data []byte, c *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	var unknown Errors
	if len(doc.Content) > 0 {
		unknown = unknownKeys(doc.Content[0], reflect.TypeOf(*c), "", unknown)
	}
	if len(unknown) > 0 {
		return unknown
	}
	return decodeStrict(data, c)
}

// decodeStrict decodes with yaml.v3's own check of unknown keys.
func decodeStrict(data []byte, c *Config) error {
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	if err := d.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty document: all defaults
		}
		return err
	}
	var more yaml.Node
	if err := d.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return err
		}
		return fmt.Errorf("line %d: more than one YAML document", more.Line)
	}
	return nil
}

// unknownKeys appends a problem for every mapping key in n that names no field
// of t, a struct, map, slice or pointer type as Config is made of.
func unknownKeys(n *yaml.Node, t reflect.Type, path string, errs Errors) Errors {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return errs // a type error, for the decoder to report
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" || (k.Tag == "" && k.Value == "<<") {
				errs = unknownKeysMerged(v, t, path, errs)
				continue
			}
			f, ok := fields[k.Value]
			if !ok {
				errs = append(errs, &FieldError{
					Key: join(path, k.Value),
					Err: fmt.Errorf("unknown key (line %d)", k.Line),
				})
				continue
			}
			errs = unknownKeys(v, f, join(path, k.Value), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return errs
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = unknownKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return errs
		}
		for i, v := range n.Content {
			errs = unknownKeys(v, t.Elem(), path+"["+strconv.Itoa(i)+"]", errs)
		}
	}
	return errs
}

// unknownKeysMerged checks the mappings merged in with <<.
func unknownKeysMerged(v *yaml.Node, t reflect.Type, path string, errs Errors) Errors {
	for v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, m := range v.Content {
			errs = unknownKeys(m, t, path, errs)
		}
		return errs
	}
	return unknownKeys(v, t, path, errs)
}

// yamlFields maps the YAML keys of struct t to their field types, naming them
// as yaml.v3 does: the tag's name, else the lowercased field name.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
