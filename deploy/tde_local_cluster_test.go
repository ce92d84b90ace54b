package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestLocalClusterTDE points a real MariaDB at a follower's TDE key
// endpoint (HTTPS, verified with the cluster CA) of a 3-node local
// cluster, then SIGKILLs the leader: MariaDB restarts against the same
// follower and reads its keys and rows again.
func TestLocalClusterTDE(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of processes and MariaDB; skipped with -short")
	}
	requireSoftHSM(t)
	hsmtest.RequireMariaDB(t)
	c := startLocalCluster(t)
	st := c.waitStatus("3 healthy nodes and a leader", func(st clusterStatus) error { return st.allHealthy(3) })
	leader, follower := st.Leader, ""
	for _, n := range []string{"node1", "node2", "node3"} {
		if n != leader {
			follower = n
			break
		}
	}

	// Keys and a token made through the leader; MariaDB's principal may
	// decrypt with the mount's KMS key by a grant.
	var kms struct{ KeyID string }
	c.hsmctlJSON(&kms, leader, "keys", "create", "--alias", "alias/tde")
	c.hsmctl(leader, "tde", "create", "1")
	c.hsmctl(leader, "tde", "create", "2")
	var issued struct{ Token string }
	if err := json.Unmarshal([]byte(c.hsmctl(leader, "tde", "token", "issue", "--principal", "mariadb", "-o", "json")), &issued); err != nil {
		t.Fatal(err)
	}
	c.hsmctl(leader, "grants", "create", "--key", kms.KeyID, "--grantee", "mariadb", "--operations", "Decrypt")

	env := c.envFile(follower)
	if !strings.HasPrefix(env["VAULT_ADDR"], "https://") || env["VAULT_CACERT"] == "" {
		t.Fatalf("%s.env: VAULT_ADDR=%q VAULT_CACERT=%q", follower, env["VAULT_ADDR"], env["VAULT_CACERT"])
	}
	m := hsmtest.NewMariaDB(t, issued.Token, env["VAULT_ADDR"], env["VAULT_CACERT"])
	if err := m.Start(issued.Token); err != nil {
		t.Fatalf("mariadbd against %s did not start: %v\n%s", follower, err, m.ErrorLog())
	}
	m.MustQuery(`CREATE DATABASE app;
CREATE TABLE app.secret (id INT PRIMARY KEY, v VARCHAR(100)) ENGINE=InnoDB ENCRYPTED=YES ENCRYPTION_KEY_ID=2;
INSERT INTO app.secret VALUES (1, 'kept across a leader loss');`)
	m.Stop()

	c.script("kill", c.dir, strings.TrimPrefix(leader, "node"))
	c.waitStatus("a new leader", func(st clusterStatus) error {
		if st.Leader == "" || st.Leader == leader {
			return fmt.Errorf("leader %q", st.Leader)
		}
		return nil
	})
	if err := m.Start(issued.Token); err != nil {
		t.Fatalf("mariadbd against %s did not restart after %s was killed: %v\n%s", follower, leader, err, m.ErrorLog())
	}
	if got := m.MustQuery("SELECT v FROM app.secret"); got != "kept across a leader loss" {
		t.Fatalf("row after the leader loss: %q", got)
	}
	m.Stop()

	// The follower served the reads itself, and audited them.
	b, err := os.ReadFile(filepath.Join(c.dir, follower, "data", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	served := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"front":"vault"`) && strings.Contains(line, `"principal":"mariadb"`) &&
			strings.Contains(line, `"operation":"hsmbroker:ReadTDEKey"`) && strings.Contains(line, `"result":"OK"`) {
			served++
		}
	}
	if served < 4 {
		t.Fatalf("%s audited %d key reads for mariadb, want at least 4 (two starts, keys 1 and 2)", follower, served)
	}
	c.script("down", c.dir)
}
