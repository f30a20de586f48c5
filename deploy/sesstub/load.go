package main

// The load generator behind "sesstub -load URL": it measures the stub, not a client. It sends
// n SendEmail requests of a realistic size from c goroutines over keep-alive connections and
// reports the wall-clock rate and, from the stub's /_stub/stats, the stub's CPU seconds spent,
// so the figure "requests per CPU-second of the stub" does not depend on what else the machine
// runs (the load generator itself competes for the same cores).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const loadAuth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/eu-west-1/ses/aws4_request, " +
	"SignedHeaders=content-type;host;x-amz-date, Signature=" +
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func stubCPU(client *http.Client, endpoint string) float64 {
	resp, err := client.Get(endpoint + "/_stub/stats")
	if err != nil {
		log.Fatalf("load: stats: %v", err)
	}
	defer resp.Body.Close()
	var stats struct {
		CPUSeconds float64 `json:"cpu_seconds"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		log.Fatalf("load: stats: %v", err)
	}
	return stats.CPUSeconds
}

func runLoad(endpoint string, n, c, bodyBytes int) {
	endpoint = strings.TrimRight(endpoint, "/")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c, MaxIdleConns: c}, Timeout: 30 * time.Second}
	data := strings.Repeat("A", bodyBytes)
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	cpuBefore := stubCPU(client, endpoint)
	started := time.Now()
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				body := fmt.Sprintf(`{"Content":{"Raw":{"Data":"%s"}},"Destination":{"ToAddresses":["load%d@example.org"]},`+
					`"EmailTags":[{"Name":"tenant","Value":"load"}],"FromEmailAddress":"load@example.org"}`, data, i)
				req, _ := http.NewRequest(http.MethodPost, endpoint+sendPath, bytes.NewBufferString(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Amz-Date", "20260101T000000Z")
				req.Header.Set("Authorization", loadAuth)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(started).Seconds()
	cpu := stubCPU(client, endpoint) - cpuBefore
	fmt.Printf(`{"requests": %d, "failed": %d, "wall_seconds": %.3f, "per_second": %.0f, "stub_cpu_seconds": %.3f, "per_stub_cpu_second": %.0f}`+"\n",
		n, failed.Load(), wall, float64(n)/wall, cpu, float64(n)/cpu)
}
