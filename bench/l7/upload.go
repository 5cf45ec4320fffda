package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// uploadSize is the body of the streaming check: issue 25 asks that a
// 1 GB upload take bounded memory in the agents.
const uploadSize = 1 << 30

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// upload sends one uploadSize POST of unknown length (chunked) to url,
// whose app reads it whole, and times it.
func upload(ctx context.Context, url string) (*result, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, io.LimitReader(zeros{}, uploadSize))
	if err != nil {
		return nil, err
	}
	req.ContentLength = -1
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("upload: status %d", resp.StatusCode)
	}
	return &result{requests: 1, rate: float64(uploadSize) / took.Seconds()}, nil
}
