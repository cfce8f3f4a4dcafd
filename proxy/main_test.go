package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: servers,
// upstream connections, idle-body timers and the copy of a cut download.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
