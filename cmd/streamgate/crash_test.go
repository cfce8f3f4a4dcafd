package main

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamgate/streamgate/stream"
	"github.com/streamgate/streamgate/streamtest"
)

// gatewayProcess is `streamgate serve --config FILE` running as a child process.
type gatewayProcess struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan error
	done   bool
}

func startProcess(t *testing.T, bin, cfgPath, base string) *gatewayProcess {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	// Nothing from the test's environment overrides the file.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STREAMGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &gatewayProcess{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if !p.done {
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("log of pid %d:\n%s", cmd.Process.Pid, p.stderr.String())
		}
	})
	waitHealthy(t, clientFrom(t, ipLocal), base, p.exited)
	return p
}

// stop sends sig and waits for the process to exit.
func (p *gatewayProcess) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		p.done = true
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("pid %d did not exit after %v", p.cmd.Process.Pid, sig)
		return nil
	}
}

// TestCrashRecovery kills the gateway with SIGKILL while slow downloads are
// flowing, after their progress was checkpointed, and restarts it with the same
// configuration: every open delivery is settled from its checkpoint, no minutes
// stay reserved, and what is billed is more than nothing and no more than Stream
// delivered.
func TestCrashRecovery(t *testing.T) {
	bin := buildBinary(t)
	const size = 1 << 20
	se := newStreamEnv(t)
	users := []string{"kim", "lee", "max"}
	videos := map[string]string{}
	for _, u := range users {
		uid := se.addVideo(testDuration, size)
		// 128 KiB/s: a whole file takes 8 s, so every download is mid-body when
		// the process dies.
		se.emu.SetFault(uid, streamtest.Fault{BytesPerSecond: 128 << 10})
		videos[u] = uid
	}
	addr := freePort(t)
	dir := t.TempDir()
	cfgPath := se.writeConfig(t, dir, addr, gwOptions{CheckpointEvery: 100 * time.Millisecond})
	base := "http://" + addr
	first := startProcess(t, bin, cfgPath, base)

	c := clientFrom(t, ipGB)
	var wg sync.WaitGroup
	received := make([]int64, len(users))
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, base+"/v1/videos/"+videos[u]+"/downloads/default.mp4", nil)
			req.Header.Set("Authorization", "Bearer "+portalToken(t, u, "basic"))
			resp, err := c.Do(req)
			if err != nil {
				t.Errorf("%s: %v", u, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d", u, resp.StatusCode)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			received[i] = n
			if err == nil {
				t.Errorf("%s: the download finished (%d bytes) before the crash", u, n)
			}
		}()
	}

	// Wait until every delivery has checkpointed 64 KiB or more in the ledger:
	// several checkpoints, 100 ms apart, while bytes flow.
	db, err := sql.Open("sqlite", filepath.Join(dir, "ledger.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFor(t, 15*time.Second, "checkpoints of every open delivery", func() bool {
		var n int
		err := db.QueryRowContext(context.Background(),
			`SELECT COUNT(*) FROM deliveries WHERE settled_at IS NULL AND acked >= 65536`).Scan(&n)
		return err == nil && n == len(users)
	})

	if err := first.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("the killed process exited cleanly")
	}
	wg.Wait()
	se.waitIdle(t)

	// The last checkpoints, as the dead process left them.
	type checkpoint struct {
		bytes, minutesMicro, reservedMicro int64
	}
	checkpoints := map[string]checkpoint{}
	rows, err := db.QueryContext(context.Background(),
		`SELECT dv.user_id, dv.acked, dv.minutes_micro, dl.reserved_micro
			FROM deliveries dv JOIN downloads dl ON dl.id = dv.download_id WHERE dv.settled_at IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var user string
		var cp checkpoint
		if err := rows.Scan(&user, &cp.bytes, &cp.minutesMicro, &cp.reservedMicro); err != nil {
			t.Fatal(err)
		}
		checkpoints[user] = cp
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	db.Close()
	if len(checkpoints) != len(users) {
		t.Fatalf("%d open deliveries after the crash, want %d", len(checkpoints), len(users))
	}
	for u, cp := range checkpoints {
		if cp.reservedMicro <= 0 {
			t.Errorf("%s: the open delivery's download holds no reservation (%+v)", u, cp)
		}
	}
	if n := len(logLines(t, first.stderr.String(), "billable download")); n != 0 {
		t.Fatalf("the first process settled %d deliveries before it died; want them all open", n)
	}

	second := startProcess(t, bin, cfgPath, base)
	recovered := map[string]map[string]any{}
	for _, l := range logLines(t, second.stderr.String(), "billable download") {
		if l["status"] != "recovered" {
			t.Errorf("billable download line with status %v, want recovered: %v", l["status"], l)
			continue
		}
		recovered[l["user"].(string)] = l
	}
	if len(recovered) != len(users) {
		t.Fatalf("recovered deliveries for %d users, want %d:\n%s", len(recovered), len(users), second.stderr.String())
	}
	if !strings.Contains(second.stderr.String(), `"msg":"settled deliveries left open by the previous run","deliveries":3`) {
		t.Errorf("no summary line of the recovery:\n%s", second.stderr.String())
	}

	for i, u := range users {
		st := se.emu.Stats(videos[u], stream.Default)
		usage := getUsage(t, c, base, portalToken(t, u, "basic"))
		line := recovered[u]
		t.Logf("%s: client received %d bytes; Stream sent %d bytes (%.6f min); recovered %v bytes, %.6f min billed",
			u, received[i], st.Bytes, st.ProportionalMinutes, line["bytes"], usage.MinutesUsed)
		if usage.MinutesReserved != 0 {
			t.Errorf("%s: %.6f minutes still reserved after recovery", u, usage.MinutesReserved)
		}
		if usage.MinutesUsed <= 0 || usage.MinutesUsed > st.ProportionalMinutes+1e-6 {
			t.Errorf("%s: billed %.6f minutes, want more than 0 and at most the %.6f Stream delivered", u, usage.MinutesUsed, st.ProportionalMinutes)
		}
		if b := int64(line["bytes"].(float64)); b <= 0 || b > st.Bytes {
			t.Errorf("%s: recovered %d bytes, want more than 0 and at most the %d Stream sent", u, b, st.Bytes)
		}
		if !near(line["minutes"].(float64), usage.MinutesUsed, 1e-6) {
			t.Errorf("%s: the log line says %v minutes, the ledger %.6f", u, line["minutes"], usage.MinutesUsed)
		}
		cp := checkpoints[u]
		if int64(line["bytes"].(float64)) != cp.bytes || !near(usage.MinutesUsed, float64(cp.minutesMicro)/1e6, 1e-6) {
			t.Errorf("%s: recovered %v bytes and %.6f minutes, want the last checkpoint's %d bytes and %.6f minutes",
				u, line["bytes"], usage.MinutesUsed, cp.bytes, float64(cp.minutesMicro)/1e6)
		}
	}

	// The recovered process serves, and stops cleanly on SIGTERM.
	if r := do(t, c, http.MethodGet, base+"/v1/videos/"+videos["kim"]+"/downloads/default.mp4", portalToken(t, "kim", "basic"), nil,
		"Range", "bytes=0-1023"); r.status != http.StatusPartialContent {
		t.Errorf("download after recovery: status %d: %s", r.status, r.body)
	}
	if err := second.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
}
