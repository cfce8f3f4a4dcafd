package usage_test

import (
	"testing"

	"github.com/streamgate/streamgate/usage"
	"github.com/streamgate/streamgate/usage/ledgertest"
)

// TestPostgresReplicasLinkUses spends a use-limited link from two replicas at
// once: exactly its uses start downloads.
func TestPostgresReplicasLinkUses(t *testing.T) {
	dsn := freshSchema(t)
	ledgertest.LinkUsesConcurrently(t, []usage.Ledger{openPostgres(t, dsn), openPostgres(t, dsn)})
}

// TestPostgresReplicasRevocation revokes on one replica; the other refuses
// the links on its next request.
func TestPostgresReplicasRevocation(t *testing.T) {
	dsn := freshSchema(t)
	ledgertest.RevocationAcrossLedgers(t, []usage.Ledger{openPostgres(t, dsn), openPostgres(t, dsn)})
}
