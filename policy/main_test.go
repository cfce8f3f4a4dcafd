package policy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a
// Redis-backed Concurrency renews its slots in one until Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
