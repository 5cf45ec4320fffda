package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Issue 28's targets: what telemetry may cost, on against off.
const (
	targetTelemetryP99 = 50 * time.Microsecond // more p99
	targetTelemetryCPU = 0.10                  // more CPU per request
)

// otlpSink is an OTLP/HTTP trace receiver that counts and discards: the
// agents' export costs what it costs against any receiver.
type otlpSink struct {
	exports atomic.Int64
	bytes   atomic.Int64
}

func (s *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	s.exports.Add(1)
	s.bytes.Add(n)
	// An empty ExportTraceServiceResponse.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// runTelemetry compares telemetry off (telemetry.service_metrics false, no
// tracing, no access log) and on (the golden signals, and tracing at 1 %
// sampling to an OTLP receiver).
func runTelemetry(ctx context.Context) error {
	sink := &otlpSink{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sink, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	return runComparison(ctx, comparison{
		flag:      "-telemetry",
		issue:     28,
		setup:     "off: telemetry.service_metrics false; on: golden signals and tracing at 1 % sampling to an OTLP/HTTP receiver; access log off in both",
		onConfig:  fmt.Sprintf("telemetry:\n  tracing:\n    otlp_endpoint: http://%s\n    sample_rate: 0.01\n", ln.Addr()),
		offConfig: "telemetry:\n  service_metrics: false\n",
		targetP99: targetTelemetryP99,
		targetCPU: targetTelemetryCPU,
		footer: func(w io.Writer) {
			fmt.Fprintf(w, "\nOTLP exports received: %d requests, %d bytes\n", sink.exports.Load(), sink.bytes.Load())
		},
	})
}
