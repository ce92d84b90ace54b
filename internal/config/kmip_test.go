package config

import (
	"strings"
	"testing"
)

func TestValidateKMIP(t *testing.T) {
	cases := []struct {
		k    KMIP
		want string // "" for valid
	}{
		{KMIP{}, ""},
		{KMIP{Addr: "127.0.0.1:5696"}, ""},
		{KMIP{Addr: "0.0.0.0:5696", Cert: "c.pem", Key: "k.pem", WrappingKey: "alias/tde"}, ""},
		{KMIP{WrappingKey: "alias/x"}, "kmip.addr"},
		{KMIP{Addr: "nohost"}, "kmip.addr"},
		{KMIP{Addr: "127.0.0.1:0"}, "kmip.addr"},
		{KMIP{Addr: "127.0.0.1:5696", Cert: "c.pem"}, "kmip.cert"},
		{KMIP{Addr: "127.0.0.1:5696", WrappingKey: "1234"}, "kmip.wrapping_key"},
	}
	for _, c := range cases {
		var got []string
		Config{KMIP: c.k}.validateKMIP(func(field, format string, args ...any) { got = append(got, field) })
		switch {
		case c.want == "" && len(got) > 0:
			t.Errorf("%+v: unexpected errors on %v", c.k, got)
		case c.want != "" && !strings.Contains(strings.Join(got, ","), c.want):
			t.Errorf("%+v: errors on %v, want %s", c.k, got, c.want)
		}
	}
}
