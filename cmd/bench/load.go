package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
)

// loadResult is what a closed-loop load run measured.
type loadResult struct {
	requests int
	errors   int
	seconds  float64
	p50, p99 time.Duration
	// cpu is the CPU seconds the measured server processes spent during the run, in total and each.
	cpu    float64
	cpuPer []float64
}

func (r loadResult) rate() float64 { return float64(r.requests) / r.seconds }

// closedLoop runs concurrency workers, each calling do back to back for d, and records every latency.
// pids are the server processes whose CPU time the run is charged with.
func closedLoop(ctx context.Context, concurrency int, d time.Duration, pids []int, do func(ctx context.Context, rnd *rand.Rand) error) loadResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cpu0 := make([]float64, len(pids))
	for i, pid := range pids {
		cpu0[i] = cpuSeconds(pid)
	}
	var mu sync.Mutex
	var all []time.Duration
	var errs int
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			lat := make([]time.Duration, 0, 1<<14)
			n := 0
			for ctx.Err() == nil {
				t := time.Now()
				if err := do(ctx, rnd); err != nil {
					if ctx.Err() == nil {
						n++
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			all = append(all, lat...)
			errs += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := loadResult{requests: len(all), errors: errs, seconds: time.Since(start).Seconds()}
	for i, pid := range pids {
		res.cpuPer = append(res.cpuPer, cpuSeconds(pid)-cpu0[i])
		res.cpu += res.cpuPer[i]
	}
	slices.Sort(all)
	if len(all) > 0 {
		res.p50, res.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return res
}

// syncClient posts sync requests to one API process over kept-alive connections.
type syncClient struct {
	url string
	hc  *http.Client
}

func newSyncClient(addr string, concurrency int) *syncClient {
	tr := &http.Transport{MaxIdleConns: concurrency, MaxIdleConnsPerHost: concurrency, IdleConnTimeout: time.Minute}
	return &syncClient{url: "http://" + addr + "/conversation/sync", hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (c *syncClient) post(ctx context.Context, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sync: HTTP %d: %s", resp.StatusCode, out)
	}
	return out, nil
}
