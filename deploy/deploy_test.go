package deploy

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/streamgate/streamgate/config"
)

// readYAML decodes every document of a YAML file.
func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// dig walks a decoded document: string keys index maps, ints index lists.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := dig(v, path...).(string)
	return s
}

func list(v any, path ...any) []any {
	l, _ := dig(v, path...).([]any)
	return l
}

// manifests are the Kubernetes objects of kubernetes/, by "Kind/name".
func manifests(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	objs := map[string]map[string]any{}
	for _, f := range files {
		for _, d := range readYAML(t, f) {
			kind, name := str(d, "kind"), str(d, "metadata", "name")
			if kind == "Kustomization" {
				name = filepath.Base(f)
			}
			if kind == "" || name == "" || str(d, "apiVersion") == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
				continue
			}
			objs[kind+"/"+name] = d
		}
	}
	return objs
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	k := manifests(t)["Kustomization/kustomization.yaml"]
	if k == nil {
		t.Fatal("no kubernetes/kustomization.yaml")
	}
	var listed []string
	for _, r := range list(k, "resources") {
		listed = append(listed, r.(string))
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(listed, b) {
			t.Errorf("kustomization.yaml does not list %s", b)
		}
	}
	for _, r := range listed {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
}

// gatewayPod is the Deployment, its streamgate container and its config file.
type gatewayPod struct {
	deploy    map[string]any
	container map[string]any
	config    map[string]any
	// ports are the container's ports by name.
	ports map[string]int
}

func k8sGateway(t *testing.T) gatewayPod {
	t.Helper()
	objs := manifests(t)
	d := objs["Deployment/streamgate"]
	if d == nil {
		t.Fatal("no Deployment streamgate")
	}
	var g gatewayPod
	g.deploy = d
	for _, c := range list(d, "spec", "template", "spec", "containers") {
		if str(c, "name") == "streamgate" {
			g.container = c.(map[string]any)
		}
	}
	if g.container == nil {
		t.Fatal("the Deployment has no container streamgate")
	}
	g.ports = map[string]int{}
	for _, p := range list(g.container, "ports") {
		n, _ := dig(p, "containerPort").(int)
		g.ports[str(p, "name")] = n
	}
	cm := objs["ConfigMap/streamgate"]
	if cm == nil {
		t.Fatal("no ConfigMap streamgate")
	}
	if err := yaml.Unmarshal([]byte(str(cm, "data", "config.yaml")), &g.config); err != nil || g.config == nil {
		t.Fatalf("ConfigMap streamgate: config.yaml: %v", err)
	}
	return g
}

func TestDeployment(t *testing.T) {
	g := k8sGateway(t)
	if r, _ := dig(g.deploy, "spec", "replicas").(int); r != 2 {
		t.Errorf("replicas = %v, want 2", dig(g.deploy, "spec", "replicas"))
	}
	probes := []struct{ probe, path string }{
		{"readinessProbe", "/readyz"},
		{"livenessProbe", "/healthz"},
	}
	for _, p := range probes {
		if got := str(g.container, p.probe, "httpGet", "path"); got != p.path {
			t.Errorf("%s path %q, want %q", p.probe, got, p.path)
		}
		if port := dig(g.container, p.probe, "httpGet", "port"); port != "http" && port != g.ports["http"] {
			t.Errorf("%s port %v, want the http port", p.probe, port)
		}
	}
	if n := g.ports["http"]; n == 0 || n != portOf(t, str(g.config, "listen")) {
		t.Errorf("container port http %d, config listen %q: they must agree", n, str(g.config, "listen"))
	}
	if n := g.ports["admin"]; n == 0 || n != portOf(t, str(g.config, "admin", "listen")) {
		t.Errorf("container port admin %d, config admin.listen %q: they must agree", n, str(g.config, "admin", "listen"))
	}
	if got := str(g.deploy, "spec", "template", "metadata", "annotations", "prometheus.io/port"); got != strconv.Itoa(g.ports["admin"]) {
		t.Errorf("prometheus.io/port %q, want the admin port %d", got, g.ports["admin"])
	}
	grace, _ := dig(g.deploy, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	if sg := durationSeconds(t, str(g.config, "shutdown_grace")); grace <= sg {
		t.Errorf("terminationGracePeriodSeconds %d must exceed shutdown_grace (%ds), or Kubernetes kills drains", grace, sg)
	}
}

// secretish names an environment variable or config key that holds a secret.
var secretish = regexp.MustCompile(`(?i)dsn|key|token|secret|password`)

func TestSecretsByReference(t *testing.T) {
	g := k8sGateway(t)
	envFromSecret := map[string]bool{}
	for _, e := range list(g.container, "env") {
		name := str(e, "name")
		if dig(e, "value") != nil && secretish.MatchString(name) {
			t.Errorf("env %s is given literally, want valueFrom.secretKeyRef", name)
		}
		if str(e, "valueFrom", "secretKeyRef", "name") != "" {
			envFromSecret[name] = true
		}
	}
	if d := str(g.config, "ledger", "dsn", "env"); d == "" || !envFromSecret[d] {
		t.Errorf("ledger.dsn reads env %q, which is not set from a Secret", d)
	}
	// The files of the Secret volumes, by mount path.
	secretFiles := map[string]bool{}
	volumes := map[string]map[string]any{}
	for _, v := range list(g.deploy, "spec", "template", "spec", "volumes") {
		volumes[str(v, "name")] = v.(map[string]any)
	}
	for _, m := range list(g.container, "volumeMounts") {
		v := volumes[str(m, "name")]
		if str(v, "secret", "secretName") == "" {
			continue
		}
		items := list(v, "secret", "items")
		if len(items) == 0 {
			t.Errorf("secret volume %s: list its items, so the test can check every file", str(m, "name"))
		}
		for _, it := range items {
			secretFiles[filepath.Join(str(m, "mountPath"), str(it, "path"))] = true
		}
	}
	file := str(g.config, "stream", "signing_key", "file")
	if file == "" || !secretFiles[file] {
		t.Errorf("stream.signing_key is file %q, not a file of a Secret volume (%v)", file, secretFiles)
	}
	for _, s := range configSecrets(g.config, "") {
		switch {
		case s.value:
			t.Errorf("%s: a literal secret in the ConfigMap", s.key)
		case s.file != "" && !secretFiles[s.file]:
			t.Errorf("%s: file %s is not in a Secret volume", s.key, s.file)
		case s.env != "" && !envFromSecret[s.env]:
			t.Errorf("%s: env %s is not set from a Secret", s.key, s.env)
		}
	}
	if str(g.config, "redis", "addr") == "" {
		t.Error("redis.addr is empty: the replicas would not share rate limits and caps")
	}
	if str(g.config, "ledger", "driver") != "postgres" {
		t.Error("ledger.driver is not postgres: two replicas need a shared ledger")
	}
}

func TestServiceHidesAdminPort(t *testing.T) {
	g := k8sGateway(t)
	objs := manifests(t)
	services := 0
	for key, o := range objs {
		if !strings.HasPrefix(key, "Service/") {
			continue
		}
		services++
		for _, p := range list(o, "spec", "ports") {
			tp := dig(p, "targetPort")
			if tp == "admin" || tp == g.ports["admin"] || dig(p, "port") == g.ports["admin"] {
				t.Errorf("%s exposes the admin port (%v)", key, p)
			}
			if tp == nil {
				t.Errorf("%s: port %v has no targetPort", key, dig(p, "port"))
			}
		}
	}
	if services == 0 {
		t.Error("no Service")
	}
}

// TestK8sConfigLoads loads the ConfigMap's file as the gateway does, with the
// Secret's files and variables filled in.
func TestK8sConfigLoads(t *testing.T) {
	loadConfig(t, k8sGateway(t).config)
}

func TestCompose(t *testing.T) {
	docs := readYAML(t, "docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yml: %d documents, want 1", len(docs))
	}
	c := docs[0]
	for _, s := range []string{"gateway", "postgres", "redis"} {
		if dig(c, "services", s) == nil {
			t.Errorf("no service %s", s)
		}
	}
	gw := dig(c, "services", "gateway")
	ctx := filepath.Join(".", str(gw, "build", "context"))
	df := str(gw, "build", "dockerfile")
	if df == "" {
		df = "Dockerfile"
	}
	if _, err := os.Stat(filepath.Join(ctx, df)); err != nil {
		t.Errorf("gateway build: %v", err)
	}
	for _, dep := range []string{"postgres", "redis"} {
		if got := str(gw, "depends_on", dep, "condition"); got != "service_healthy" {
			t.Errorf("gateway depends_on %s: condition %q, want service_healthy", dep, got)
		}
		if dig(c, "services", dep, "healthcheck", "test") == nil {
			t.Errorf("service %s has no healthcheck", dep)
		}
	}

	// The config file mounted into the gateway.
	var cfgFile string
	for _, v := range list(gw, "volumes") {
		src, dst, _ := strings.Cut(v.(string), ":")
		if strings.HasPrefix(dst, "/etc/streamgate/config.yaml") {
			cfgFile = src
		}
	}
	if cfgFile == "" {
		t.Fatal("the gateway mounts no /etc/streamgate/config.yaml")
	}
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", cfgFile, err)
	}
	var gwSecrets []string
	for _, s := range list(gw, "secrets") {
		gwSecrets = append(gwSecrets, s.(string))
		if str(c, "secrets", s.(string), "file") == "" {
			t.Errorf("secret %s is not defined from a file", s)
		}
	}
	env, _ := dig(gw, "environment").(map[string]any)
	for _, s := range configSecrets(cfg, "") {
		switch {
		case s.value:
			t.Errorf("%s: a literal secret in %s", s.key, cfgFile)
		case s.file != "" && !slices.Contains(gwSecrets, strings.TrimPrefix(s.file, "/run/secrets/")):
			t.Errorf("%s: file %s is not one of the gateway's secrets %v", s.key, s.file, gwSecrets)
		case s.env != "" && env[s.env] == nil:
			t.Errorf("%s: env %s is not set on the gateway", s.key, s.env)
		}
	}
	for _, p := range list(gw, "ports") {
		ps := p.(string)
		if strings.HasSuffix(ps, ":"+strconv.Itoa(portOf(t, str(cfg, "admin", "listen")))) && !strings.HasPrefix(ps, "127.0.0.1:") {
			t.Errorf("the admin port is published beyond loopback: %s", ps)
		}
	}
	if v, _ := env["STREAMGATE_LEDGER_DSN"].(string); !strings.Contains(v, "@postgres:") {
		t.Errorf("STREAMGATE_LEDGER_DSN %q does not point at the postgres service", v)
	}
	if str(cfg, "redis", "addr") != "redis:6379" {
		t.Errorf("redis.addr %q, want the redis service", str(cfg, "redis", "addr"))
	}
	loadConfig(t, cfg)
}

// TestDockerfile: multi-stage, static, distroless nonroot.
func TestDockerfile(t *testing.T) {
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var froms []string
	var user string
	var cgoOff, build bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			froms = append(froms, strings.Fields(line)[1])
		case strings.HasPrefix(line, "USER "):
			user = strings.Fields(line)[1]
		}
		cgoOff = cgoOff || strings.Contains(line, "CGO_ENABLED=0")
		build = build || strings.Contains(line, "go build")
	}
	if len(froms) < 2 {
		t.Errorf("%d stages, want a build stage and a runtime stage", len(froms))
	}
	if last := froms[len(froms)-1]; !strings.HasPrefix(last, "gcr.io/distroless/") || !strings.HasSuffix(last, ":nonroot") {
		t.Errorf("runtime stage %q, want a distroless :nonroot image", last)
	}
	if !strings.HasPrefix(user, "nonroot") && !strings.HasPrefix(user, "65532") {
		t.Errorf("USER %q, want nonroot", user)
	}
	if !cgoOff || !build {
		t.Errorf("go build %v, CGO_ENABLED=0 %v: the binary must be built static for distroless/static", build, cgoOff)
	}
}

func portOf(t *testing.T, hostPort string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Errorf("%q: %v", hostPort, err)
		return -1
	}
	n, _ := strconv.Atoi(p)
	return n
}

func durationSeconds(t *testing.T, s string) int {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("duration %q: %v", s, err)
	}
	return int(d.Seconds())
}

// secretRef is one {value|env|file} secret of a config file.
type secretRef struct {
	key       string
	env, file string
	value     bool
}

// configSecrets finds the secrets of a decoded config: the maps whose keys are
// only value, env and file.
func configSecrets(v any, key string) []secretRef {
	var out []secretRef
	switch x := v.(type) {
	case map[string]any:
		isSecret := len(x) > 0
		for k := range x {
			isSecret = isSecret && (k == "value" || k == "env" || k == "file")
		}
		if isSecret {
			return []secretRef{{key: key, env: str(x, "env"), file: str(x, "file"), value: x["value"] != nil}}
		}
		for k, e := range x {
			out = append(out, configSecrets(e, strings.TrimPrefix(key+"."+k, "."))...)
		}
	case []any:
		for i, e := range x {
			out = append(out, configSecrets(e, fmt.Sprintf("%s[%d]", key, i))...)
		}
	}
	return out
}

var (
	keyOnce sync.Once
	keyPEM  []byte
)

// signingKeyPEM is an RSA key in PEM, as a Secret's signing-key file holds it.
func signingKeyPEM(t *testing.T) []byte {
	t.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	})
	return keyPEM
}

// loadConfig writes cfg with its secret files replaced by temporary ones and
// loads it with config.Parse, which validates every key.
func loadConfig(t *testing.T, cfg map[string]any) {
	t.Helper()
	dir := t.TempDir()
	var rewrite func(v any)
	rewrite = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if f, ok := x["file"].(string); ok && len(x) == 1 {
				content := make([]byte, 24)
				_, _ = rand.Read(content)
				data := []byte(hex.EncodeToString(content))
				if strings.Contains(filepath.Base(f), "signing-key") {
					data = signingKeyPEM(t)
				}
				p := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(f, "/"), "/", "_"))
				if err := os.WriteFile(p, data, 0o600); err != nil {
					t.Fatal(err)
				}
				x["file"] = p
				return
			}
			for _, e := range x {
				rewrite(e)
			}
		case []any:
			for _, e := range x {
				rewrite(e)
			}
		}
	}
	rewrite(cfg)
	if _, ok := reflect.TypeOf(config.Config{}).FieldByName("Admin"); !ok {
		// The admin keys are not in the configuration yet: check the rest.
		delete(cfg, "admin")
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "STREAMGATE_LEDGER_DSN" {
			return "postgres://streamgate:password@postgres:5432/streamgate?sslmode=disable"
		}
		return ""
	}
	if _, err := config.Parse(b, getenv); err != nil {
		t.Errorf("the configuration does not load: %v", err)
	}
}
