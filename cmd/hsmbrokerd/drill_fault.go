package main

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
)

// envDrillHSMFault names a file whose existence makes every PKCS#11 call
// of this node fail with CKR_DEVICE_REMOVED, as an HSM that went away
// would: the switch `hsmctl drill hsm-loss` flips on a test cluster whose
// HSM (SoftHSM, in process) cannot be unplugged. {node} in the value
// becomes the node id. Unset, which is the default, nothing is watched.
const envDrillHSMFault = "HSMBROKER_DRILL_HSM_FAULT_FILE"

// drillFaultPoll is how often the file is looked at.
const drillFaultPoll = 100 * time.Millisecond

// drillHSMFault installs fault injection on the HSM configuration when
// HSMBROKER_DRILL_HSM_FAULT_FILE is set, and watches the file until stop
// is called.
func drillHSMFault(log *slog.Logger, cfg *hsm.Config, nodeID string) (stop func(), err error) {
	path := os.Getenv(envDrillHSMFault)
	if path == "" {
		return func() {}, nil
	}
	path = strings.ReplaceAll(path, "{node}", nodeID)
	if cfg.Faults != nil {
		return nil, errors.New(envDrillHSMFault + ": fault injection is configured already")
	}
	f := &hsm.Faults{}
	cfg.Faults = f
	log.Warn("HSM drill switch armed: while the file exists, this node's HSM is treated as unavailable; do not set "+envDrillHSMFault+" outside drills",
		"file", path)
	on := false
	check := func() {
		_, serr := os.Stat(path)
		switch exists := serr == nil; {
		case exists && !on:
			f.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceRemoved})
			log.Warn("HSM drill switch on: every PKCS#11 call fails with CKR_DEVICE_REMOVED", "file", path)
		case !exists && on:
			f.Clear()
			log.Warn("HSM drill switch off: PKCS#11 calls reach the token again", "file", path)
		}
		on = serr == nil
	}
	check() // a node started with the switch on finds no HSM, as it would
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(drillFaultPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				check()
			}
		}
	}()
	return func() { close(done); <-stopped }, nil
}
