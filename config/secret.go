package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"go.yaml.in/yaml/v3"
)

const redacted = "[redacted]"

// Secret is a secret given by exactly one of a literal value, the name of an
// environment variable or the path of a file; in YAML
// {value: "..."}, {env: NAME} or {file: /path}. Validate resolves it; Bytes then
// returns it. A Secret never prints, marshals or logs its value, only
// "[redacted]".
type Secret struct {
	// Value is the secret itself.
	Value string `yaml:"value"`
	// Env is the name of the environment variable holding it.
	Env string `yaml:"env"`
	// File is the path of the file holding it.
	File string `yaml:"file"`

	resolved []byte
}

// Bytes returns the resolved secret, nil before Validate. Callers must not
// modify it.
func (s Secret) Bytes() []byte { return s.resolved }

// IsSet reports whether any of value, env or file is given.
func (s Secret) IsSet() bool { return s.Value != "" || s.Env != "" || s.File != "" }

// resolve reads the secret with LoadSecret. A file's trailing line breaks
// are dropped, as editors and `echo` add them and they are never meant.
func (s *Secret) resolve(getenv func(string) string) error {
	b, err := LoadSecret(s.Value, s.Env, s.File, getenv)
	if err != nil {
		return err
	}
	if s.File != "" {
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return fmt.Errorf("file %s is empty", s.File)
		}
	}
	s.resolved = b
	return nil
}

// UnmarshalYAML decodes {value, env, file}, replacing what was there, so a
// default {env: NAME} does not linger next to a file given in YAML.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf(
			"line %d: a secret is a mapping: {value: ...}, {env: NAME} or {file: PATH}", n.Line)}}
	}
	var v Secret
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		var dst *string
		switch k.Value {
		case "value":
			dst = &v.Value
		case "env":
			dst = &v.Env
		case "file":
			dst = &v.File
		default:
			errs = append(errs, fmt.Sprintf("line %d: field %s not found in a secret (want value, env or file)", k.Line, k.Value))
			continue
		}
		for val.Kind == yaml.AliasNode {
			val = val.Alias
		}
		if val.Kind == yaml.ScalarNode && val.ShortTag() == "!!null" {
			continue
		}
		if val.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Sprintf("line %d: secret %s must be a string", val.Line, k.Value))
			continue
		}
		*dst = val.Value
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	*s = v
	return nil
}

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]", for %#v.
func (s Secret) GoString() string { return redacted }

// Format prints "[redacted]" whatever the verb, so no verb reaches the fields.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON returns "[redacted]" as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalYAML returns "[redacted]".
func (s Secret) MarshalYAML() (any, error) { return redacted, nil }

// LogValue returns "[redacted]", for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

var (
	_ fmt.Stringer   = Secret{}
	_ fmt.GoStringer = Secret{}
	_ fmt.Formatter  = Secret{}
	_ slog.LogValuer = Secret{}
	_ yaml.Marshaler = Secret{}
)

// LoadSecret returns the secret given by exactly one of value, env (an environment
// variable name) or file (a path).
func LoadSecret(value, env, file string, getenv func(string) string) ([]byte, error) {
	n := 0
	for _, s := range []string{value, env, file} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return nil, errors.New("no value, env or file given")
	case n > 1:
		return nil, errors.New("give only one of value, env or file")
	case value != "":
		return []byte(value), nil
	case env != "":
		v := getenv(env)
		if v == "" {
			return nil, fmt.Errorf("environment variable %s is empty or unset", env)
		}
		return []byte(v), nil
	default:
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}
