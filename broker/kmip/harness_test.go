package kmip

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

func TestMain(m *testing.M) { hsmtest.Main(m) }

// env is a one-node broker with a KMIP listener over real mutual TLS.
type env struct {
	c    *hsmtest.Cluster
	srv  *Server
	addr string
	host string
	port int
}

func newEnv(t testing.TB) *env {
	t.Helper()
	hsmtest.RequireSoftHSM(t)
	c := hsmtest.NewCluster(t, 1)
	return startKMIP(t, c, 0)
}

// startKMIP serves KMIP from node i of c.
func startKMIP(t testing.TB, c *hsmtest.Cluster, i int) *env {
	t.Helper()
	return startKMIPWith(t, c, i, nil)
}

// startKMIPWith is startKMIP with edit applied to the server's Config.
func startKMIPWith(t testing.TB, c *hsmtest.Cluster, i int, edit func(*Config)) *env {
	t.Helper()
	svc := c.Nodes[i].Service
	if _, err := svc.KMIP().EnsureWrappingKey(context.Background(), DefaultWrappingKey); err != nil {
		t.Fatalf("EnsureKMIPKey: %v", err)
	}
	iss, err := c.CA.IssueServer("kmip-"+strconv.Itoa(i), []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "kmip.pem"), filepath.Join(dir, "kmip-key.pem")
	if err := iss.Save(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Service: svc, TLS: ServerTLS(cert, c.CA.Pool()), IdleTimeout: 30 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	a := l.Addr().(*net.TCPAddr)
	return &env{c: c, srv: srv, addr: a.String(), host: "127.0.0.1", port: a.Port}
}

// client is a KMIP client built on the project's codec.
type client struct {
	t    testing.TB
	conn *tls.Conn
}

func (e *env) dial(t testing.TB, principal string, role authz.Role) *client {
	t.Helper()
	cfg := e.c.ClientTLS(principal, role)
	conn, err := tls.Dial("tcp", e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn}
}

// roundTrip sends raw bytes and reads one response message.
func (c *client) roundTrip(b []byte) (ttlv.Item, error) {
	c.t.Helper()
	_ = c.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		return ttlv.Item{}, err
	}
	msg, err := ttlv.ReadMessage(c.conn, 0)
	if err != nil {
		return ttlv.Item{}, err
	}
	return ttlv.Decode(msg)
}

// op is one batch item of a request.
type op struct {
	code    uint32
	payload []ttlv.Item
}

func request(v version, ops ...op) ttlv.Item { return requestWith(v, nil, ops...) }

// requestWith is request with more fields in its header (Batch Error
// Continuation Option, Maximum Response Size).
func requestWith(v version, header []ttlv.Item, ops ...op) ttlv.Item {
	hdr := ttlv.Struct(tagRequestHeader, append([]ttlv.Item{v.item(), ttlv.Int(tagBatchCount, int32(len(ops)))}, header...)...)
	msg := ttlv.Struct(tagRequestMessage, hdr)
	for _, o := range ops {
		msg.Children = append(msg.Children, ttlv.Struct(tagBatchItem, ttlv.Enum(tagOperation, o.code), ttlv.Struct(tagRequestPayload, o.payload...)))
	}
	return msg
}

// result is one answered batch item.
type result struct {
	status, reason uint32
	message        string
	payload        ttlv.Item
}

func (c *client) send(v version, ops ...op) (ttlv.Item, []result) {
	c.t.Helper()
	return c.sendWith(v, nil, ops...)
}

// sendWith is send with more fields in the request's header.
func (c *client) sendWith(v version, header []ttlv.Item, ops ...op) (ttlv.Item, []result) {
	c.t.Helper()
	b, err := requestWith(v, header, ops...).Encode()
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.roundTrip(b)
	if err != nil {
		c.t.Fatalf("round trip: %v", err)
	}
	var out []result
	for _, bi := range resp.ChildrenOf(tagBatchItem) {
		var r result
		if s, ok := bi.Child(tagResultStatus); ok {
			r.status = uint32(s.Int)
		}
		if s, ok := bi.Child(tagResultReason); ok {
			r.reason = uint32(s.Int)
		}
		if s, ok := bi.Child(tagResultMessage); ok {
			r.message = s.Text()
		}
		r.payload, _ = bi.Child(tagResponsePayload)
		out = append(out, r)
	}
	return resp, out
}

// do sends one operation and fails the test unless it succeeds.
func (c *client) do(v version, code uint32, payload ...ttlv.Item) ttlv.Item {
	c.t.Helper()
	_, rs := c.send(v, op{code, payload})
	if len(rs) != 1 || rs[0].status != statusSuccess {
		c.t.Fatalf("%s at %s: %+v", opNames[code], v, rs)
	}
	return rs[0].payload
}

// fail sends one operation and returns its result reason, failing the
// test if it succeeds.
func (c *client) fail(v version, code uint32, payload ...ttlv.Item) uint32 {
	c.t.Helper()
	_, rs := c.send(v, op{code, payload})
	if len(rs) != 1 || rs[0].status != statusOperationFailed {
		c.t.Fatalf("%s at %s should fail: %+v", opNames[code], v, rs)
	}
	return rs[0].reason
}

func responseVersion(t *testing.T, resp ttlv.Item) version {
	t.Helper()
	hdr, _ := resp.Child(tagResponseHeader)
	pv, _ := hdr.Child(tagProtocolVersion)
	v, err := parseVersion(pv)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func attr1(name string, v ttlv.Item) ttlv.Item {
	v.Tag = tagAttributeValue
	return ttlv.Struct(tagAttribute, ttlv.Text(tagAttributeName, name), v)
}

func nameValue(n string) ttlv.Item {
	return ttlv.Struct(0, ttlv.Text(tagNameValue, n), ttlv.Enum(tagNameType, nameTypeText))
}

func symKey(material []byte) ttlv.Item {
	return ttlv.Struct(tagSymmetricKey, ttlv.Struct(tagKeyBlock, ttlv.Enum(tagKeyFormatType, formatRaw),
		ttlv.Struct(tagKeyValue, ttlv.Bytes(tagKeyMaterial, material)),
		ttlv.Enum(tagCryptographicAlgorithm, 3), ttlv.Int(tagCryptographicLength, int32(8*len(material)))))
}

func uid(id string) ttlv.Item { return ttlv.Text(tagUniqueIdentifier, id) }

func ids(p ttlv.Item) []string {
	var out []string
	for _, u := range p.ChildrenOf(tagUniqueIdentifier) {
		out = append(out, u.Text())
	}
	return out
}

func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return conn, conn.Handshake()
}
