package config

import (
	"slices"
	"strings"
	"testing"
)

func TestAdmin(t *testing.T) {
	const token = "an-admin-token-of-at-least-32-bytes!"
	tests := []struct {
		name    string
		yaml    string
		env     env
		problem string // the key of the one problem expected, "" for none
	}{
		{name: "left out runs no admin server"},
		{name: "listen alone serves metrics", yaml: "admin: {listen: 127.0.0.1:9090}"},
		{name: "listen and token", yaml: "admin: {listen: 127.0.0.1:9090, token: {value: " + token + "}}"},
		{name: "token from the environment", yaml: "admin: {listen: 127.0.0.1:9090, token: {env: ADMIN_TOKEN}}",
			env: env{"ADMIN_TOKEN": token}},
		{name: "port 0 beside port 0", yaml: "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}"},
		{name: "listen from the environment", env: env{"STREAMGATE_ADMIN_LISTEN": "127.0.0.1:9090"}},
		{name: "token without listen", yaml: "admin: {token: {value: " + token + "}}", problem: "admin.listen"},
		{name: "not host:port", yaml: "admin: {listen: localhost}", problem: "admin.listen"},
		{name: "the public port", yaml: "listen: 0.0.0.0:8080\nadmin: {listen: 127.0.0.1:8080}", problem: "admin.listen"},
		{name: "short token", yaml: "admin: {listen: 127.0.0.1:9090, token: {value: short}}", problem: "admin.token"},
		{name: "token env unset", yaml: "admin: {listen: 127.0.0.1:9090, token: {env: ADMIN_TOKEN}}", problem: "admin.token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := goodEnv()
			for k, v := range tt.env {
				e[k] = v
			}
			c, err := Parse([]byte(minimalYAML+tt.yaml+"\n"), e.get)
			if tt.problem != "" {
				if err == nil {
					t.Fatalf("no error, want a problem with %s", tt.problem)
				}
				if keys := problemKeys(t, err); !slices.Equal(keys, []string{tt.problem}) {
					t.Fatalf("problems %v (%v), want just %s", keys, err, tt.problem)
				}
				if strings.Contains(err.Error(), "short") {
					t.Errorf("the error %q shows the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(tt.yaml, "token") && string(c.Admin.Token.Bytes()) != token {
				t.Errorf("admin.token resolved to %d bytes, want the token", len(c.Admin.Token.Bytes()))
			}
			if want := tt.env["STREAMGATE_ADMIN_LISTEN"]; want != "" && c.Admin.Listen != want {
				t.Errorf("admin.listen = %q, want %q from the environment", c.Admin.Listen, want)
			}
		})
	}
}
