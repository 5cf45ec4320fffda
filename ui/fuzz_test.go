package ui

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzParsePromAnswer: any answer of a Prometheus, or of whatever sits at
// its URL, is samples or an error, never a panic.
func FuzzParsePromAnswer(f *testing.F) {
	for _, s := range []string{
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"source":"a"},"value":[1,"1.5"]}]}}`,
		`{"status":"error","errorType":"bad_data","error":"x"}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":null,"value":[null,null]}]}}`,
		`[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		samples, err := parsePromAnswer(bytes.NewReader(b), 200)
		if err == nil && samples == nil {
			t.Fatal("no error and no samples")
		}
	})
}

// FuzzReadScrape: any answer of an agent's telemetry listener is counters
// or an error, never a panic.
func FuzzReadScrape(f *testing.F) {
	for _, s := range []string{
		"# TYPE meshwork_service_requests_total counter\nmeshwork_service_requests_total{direction=\"outbound\",source=\"a\",destination=\"b\",result=\"failure\"} 3\n",
		"# TYPE meshwork_service_request_duration_seconds histogram\nmeshwork_service_request_duration_seconds_bucket{direction=\"outbound\",source=\"a\",destination=\"b\",le=\"0.1\"} 1\nmeshwork_service_request_duration_seconds_bucket{direction=\"outbound\",source=\"a\",destination=\"b\",le=\"+Inf\"} 2\nmeshwork_service_request_duration_seconds_count{direction=\"outbound\",source=\"a\",destination=\"b\"} 2\n",
		"meshwork_ca_leaf_expiry_seconds 3600\n",
		"meshwork_build_info{version=\"1\"} 1\n",
		"garbage {",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fams, err := parseText(strings.NewReader(s), "fuzz")
		if err != nil {
			return
		}
		rd := readFamilies(fams, time.Unix(0, 0))
		for _, c := range rd.edges {
			if _, ok := quantile(0.99, c.buckets); ok && c.buckets == nil {
				t.Fatal("a quantile of no buckets")
			}
		}
	})
}
