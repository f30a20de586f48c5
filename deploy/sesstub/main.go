// Command sesstub is a stand-in for Amazon SES v2 that costs almost nothing per request, for the
// sender's throughput benchmark. moto stays the SES of the functional tests: it checks identities
// and keeps every message, and it takes about 190 requests/s on this machine, far below the quotas
// the benchmark measures. The stub answers the two calls the sender makes:
//
//	POST /v2/email/outbound-emails   SendEmail (raw content)   -> {"MessageId": "..."}
//	GET  /v2/email/account           GetAccount                -> the account's quota and state
//
// It checks that a request carries a SigV4 Authorization header of the right shape (algorithm,
// credential scope for the "ses" service, signed headers, a 64-hex signature) and an X-Amz-Date,
// but not the signature itself: it knows no secret. What it accepts is stamped with its arrival
// time (wall clock: the kernel's receive time of the request's first byte, as SES meters requests
// on machines of its own; arrival.go says why not the handler's clock) and recipient, and can be
// read back, so a benchmark can count sends per second and per recipient without the fault proxy
// on the measured path. Faults are switched at start (-faults JSON) or
// while running (POST /_stub/faults, the same JSON), each optionally healing itself after some
// seconds:
//
//	{"throttle": 0.3, "seed": 3, "throttle_seconds": 60}  429 TooManyRequestsException for 30 % of sends
//	{"unavailable": "503", "unavailable_seconds": 60}     503 ServiceUnavailable for every request
//	{"unavailable": "reset"}                              every connection dropped (RST), no answer
//	{"reject": "bounce"}                                  400 MessageRejected for recipients containing it
//	{"latency_ms": 40}                                    every answer held that long (SES's own latency)
//	{"capture": 10}                                       keep the last 10 SendEmail requests whole
//	{"heal": true}                                        every fault off (may be combined with new ones)
//
// Admin endpoints: GET /_stub/stats (counters, accepted sends per wall-clock second, the stub's
// own CPU seconds, how many arrivals the kernel stamped), GET /_stub/arrivals?from=N (accepted sends from the Nth on: arrival time and
// recipient), GET /_stub/captured, POST /_stub/reset (forget the recordings). Error answers have
// SES v2's REST-JSON shape: the code in the x-amzn-ErrorType header, {"message": ...} as the body.
//
// The stub prints "listening on http://127.0.0.1:PORT" on its first line of output; -addr
// 127.0.0.1:0 picks a free port. "sesstub -load URL" is a load generator for measuring it.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	sendPath    = "/v2/email/outbound-emails"
	accountPath = "/v2/email/account"
	// A SendEmail body larger than this is refused before it is read; SES's own limit is 40 MB
	// per message, and the benchmark's mails are a few kilobytes.
	maxBodyBytes = 64 << 20
)

// sigV4Shaped says whether an Authorization header looks like SigV4 for SES:
//
//	AWS4-HMAC-SHA256 Credential=KEY/YYYYMMDD/REGION/ses/aws4_request, SignedHeaders=a;b, Signature=<64 hex>
//
// The stub checks the shape and the service in the credential scope, never the signature (it has
// no secret to check it against). Written out by hand: a regular expression was a sixth of the
// stub's CPU per request.
func sigV4Shaped(h string) bool {
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 Credential=")
	if !ok {
		return false
	}
	credential, rest, ok := strings.Cut(rest, ",")
	if !ok {
		return false
	}
	scope := strings.Split(credential, "/")
	if len(scope) != 5 || scope[0] == "" || len(scope[1]) != 8 || !allIn(scope[1], "0123456789") || scope[2] == "" ||
		scope[3] != "ses" || scope[4] != "aws4_request" {
		return false
	}
	signed, rest, ok := strings.Cut(strings.TrimLeft(rest, " "), ",")
	signed, isSigned := strings.CutPrefix(signed, "SignedHeaders=")
	if !ok || !isSigned || signed == "" || !allIn(signed, "abcdefghijklmnopqrstuvwxyz0123456789;-") {
		return false
	}
	signature, ok := strings.CutPrefix(strings.TrimLeft(rest, " "), "Signature=")
	return ok && len(signature) == 64 && allIn(signature, "0123456789abcdef")
}

func allIn(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(chars, s[i]) < 0 {
			return false
		}
	}
	return true
}

// Faults is both the JSON of -faults and POST /_stub/faults. Fields left out keep their current
// setting; a *_seconds field makes its fault heal itself that long after it was set.
type Faults struct {
	Heal               bool     `json:"heal"`
	Throttle           *float64 `json:"throttle"`
	Seed               *int64   `json:"seed"`
	ThrottleSeconds    *float64 `json:"throttle_seconds"`
	Unavailable        *string  `json:"unavailable"`
	UnavailableSeconds *float64 `json:"unavailable_seconds"`
	Reject             *string  `json:"reject"`
	RejectSeconds      *float64 `json:"reject_seconds"`
	LatencyMs          *float64 `json:"latency_ms"`
	Capture            *int     `json:"capture"`
}

type arrival struct {
	At int64  // unix nanoseconds
	To string // the first recipient
}

type captured struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

type stub struct {
	mu sync.Mutex
	// faults; a zero "until" means no end
	throttle         float64
	throttleUntil    time.Time
	rng              *rand.Rand
	unavailable      string // "", "503" or "reset"
	unavailableUntil time.Time
	rejects          []reject
	latency          time.Duration
	captureMax       int
	captures         []captured
	// recordings
	arrivals  []arrival
	perSecond map[int64]int64
	counts    map[string]int64
	seq       atomic.Uint64
	// how many requests were stamped by the kernel's receive time, and how many by the clock (arrival.go)
	kernelStamps, clockStamps atomic.Int64
}

type reject struct {
	substring string
	until     time.Time
}

func newStub() *stub {
	return &stub{rng: rand.New(rand.NewSource(0)), perSecond: map[int64]int64{}, counts: map[string]int64{}}
}

func until(seconds *float64, now time.Time) time.Time {
	if seconds == nil || *seconds <= 0 {
		return time.Time{}
	}
	return now.Add(time.Duration(*seconds * float64(time.Second)))
}

func active(end, now time.Time) bool { return end.IsZero() || now.Before(end) }

func (s *stub) apply(f Faults) error {
	if f.Throttle != nil && (*f.Throttle < 0 || *f.Throttle > 1) {
		return fmt.Errorf("throttle must be within [0, 1], got %v", *f.Throttle)
	}
	if f.Unavailable != nil && *f.Unavailable != "" && *f.Unavailable != "503" && *f.Unavailable != "reset" {
		return fmt.Errorf(`unavailable must be "503", "reset" or "", got %q`, *f.Unavailable)
	}
	if f.Reject != nil && *f.Reject == "" {
		return fmt.Errorf("an empty reject substring would reject every mail; use unavailable for that")
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Heal {
		s.throttle, s.unavailable, s.rejects, s.latency = 0, "", nil, 0
	}
	if f.Throttle != nil {
		s.throttle, s.throttleUntil = *f.Throttle, until(f.ThrottleSeconds, now)
		seed := int64(0)
		if f.Seed != nil {
			seed = *f.Seed
		}
		s.rng = rand.New(rand.NewSource(seed))
	}
	if f.Unavailable != nil {
		s.unavailable, s.unavailableUntil = *f.Unavailable, until(f.UnavailableSeconds, now)
	}
	if f.Reject != nil {
		s.rejects = append(s.rejects, reject{strings.ToLower(*f.Reject), until(f.RejectSeconds, now)})
	}
	if f.LatencyMs != nil {
		s.latency = time.Duration(*f.LatencyMs * float64(time.Millisecond))
	}
	if f.Capture != nil {
		s.captureMax, s.captures = *f.Capture, nil
	}
	return nil
}

func (s *stub) count(name string) {
	s.mu.Lock()
	s.counts[name]++
	s.mu.Unlock()
}

func errorAnswer(w http.ResponseWriter, status int, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-amzn-ErrorType", code)
	h.Set("x-amzn-RequestId", requestID())
	w.WriteHeader(status)
	body, _ := json.Marshal(map[string]string{"message": message})
	w.Write(body)
}

var idCounter atomic.Uint64
var idPrefix = strconv.FormatInt(time.Now().UnixNano(), 36)

func requestID() string { return idPrefix + "-" + strconv.FormatUint(idCounter.Add(1), 36) }

// dropConnection resets the client's connection without an answer: SO_LINGER 0 turns the close
// into an RST, so the client sees a dropped connection, not an early end of the stream.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	// a reset, not an orderly close: *net.TCPConn, or the stamped connection around one
	if tcp, ok := conn.(interface{ SetLinger(int) error }); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

// sendRequest is the part of SendEmail's body the stub reads. Content.Raw.Data stays a raw JSON
// value: the stub does not decode the message, it only checks that there is one.
type sendRequest struct {
	FromEmailAddress string `json:"FromEmailAddress"`
	Destination      struct {
		ToAddresses []string `json:"ToAddresses"`
	} `json:"Destination"`
	Content struct {
		Raw *struct {
			Data json.RawMessage `json:"Data"`
		} `json:"Raw"`
	} `json:"Content"`
}

// bodies are reused request buffers: a SendEmail body is a few kilobytes, and allocating one per
// request made the garbage collector a tenth of the stub's CPU.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

var rawDataKey = []byte(`"Raw":{"Data":"`)

// decodeSend reads a SendEmail body. The message (base64, nearly all of the body) is only
// checked to be base64; the rest is decoded as JSON with the message cut out, because scanning
// kilobytes of base64 with encoding/json was more than half of the stub's cost per request. Any
// body not shaped like botocore's (escapes in the data, the key elsewhere) is decoded whole.
func decodeSend(body []byte, req *sendRequest) error {
	start := bytes.Index(body, rawDataKey)
	if start >= 0 {
		start += len(rawDataKey)
		if n := bytes.IndexByte(body[start:], '"'); n >= 0 && isBase64(body[start:start+n]) {
			rest := make([]byte, 0, len(body)-n+1)
			rest = append(append(append(rest, body[:start]...), 'A'), body[start+n:]...)
			err := json.Unmarshal(rest, req)
			if err == nil && req.Content.Raw != nil && string(req.Content.Raw.Data) == `"A"` {
				req.Content.Raw.Data = body[start-1 : start+n+1]
				return nil
			}
			*req = sendRequest{}
		}
	}
	return json.Unmarshal(body, req)
}

var base64Alphabet = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") {
		t[c] = true
	}
	return t
}()

func isBase64(b []byte) bool {
	for _, c := range b {
		if !base64Alphabet[c] {
			return false
		}
	}
	return len(b) > 0
}

// checkAuth answers the request itself and returns false when the signature header is missing or malformed.
func (s *stub) checkAuth(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		s.count("bad_auth")
		errorAnswer(w, 403, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return false
	}
	if !sigV4Shaped(auth) || r.Header.Get("X-Amz-Date") == "" {
		s.count("bad_auth")
		errorAnswer(w, 403, "IncompleteSignatureException", "Authorization header or X-Amz-Date is malformed")
		return false
	}
	return true
}

// fault decides, for a request that arrived at now, which fault answers it ("" for none).
func (s *stub) fault(isSend bool, to []string, now time.Time) (kind string, latency time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	latency = s.latency
	if s.unavailable != "" && active(s.unavailableUntil, now) {
		return "unavailable-" + s.unavailable, latency
	}
	if !isSend {
		return "", latency
	}
	if s.throttle > 0 && active(s.throttleUntil, now) && (s.throttle >= 1 || s.rng.Float64() < s.throttle) {
		return "throttle", latency
	}
	for _, rj := range s.rejects {
		if !active(rj.until, now) {
			continue
		}
		for _, addr := range to {
			if strings.Contains(strings.ToLower(addr), rj.substring) {
				return "reject", latency
			}
		}
	}
	return "", latency
}

func answerFault(w http.ResponseWriter, kind string) {
	switch kind {
	case "unavailable-reset":
		dropConnection(w)
	case "unavailable-503":
		errorAnswer(w, 503, "ServiceUnavailable", "Service Unavailable")
	case "throttle":
		errorAnswer(w, 429, "TooManyRequestsException", "Maximum sending rate exceeded.")
	case "reject":
		errorAnswer(w, 400, "MessageRejected", "Email address is on the rejection list (sesstub).")
	}
}

func (s *stub) sendEmail(w http.ResponseWriter, r *http.Request) {
	arrived := arrivalOf(r.Context())
	s.count("requests")
	if !s.checkAuth(w, r) {
		return
	}
	buf := bodies.Get().(*bytes.Buffer)
	buf.Reset()
	defer bodies.Put(buf)
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBodyBytes)); err != nil {
		s.count("bad_request")
		errorAnswer(w, 400, "BadRequestException", "request body could not be read: "+err.Error())
		return
	}
	var req sendRequest
	if err := decodeSend(buf.Bytes(), &req); err != nil {
		s.count("bad_request")
		errorAnswer(w, 400, "BadRequestException", "request body is not JSON: "+err.Error())
		return
	}
	if req.FromEmailAddress == "" || len(req.Destination.ToAddresses) == 0 || req.Content.Raw == nil || len(req.Content.Raw.Data) < 2 {
		s.count("bad_request")
		errorAnswer(w, 400, "BadRequestException", "SendEmail needs FromEmailAddress, Destination.ToAddresses and Content.Raw.Data")
		return
	}
	kind, latency := s.fault(true, req.Destination.ToAddresses, arrived)
	if latency > 0 {
		time.Sleep(latency)
	}
	if kind != "" {
		s.count(kind)
		answerFault(w, kind)
		return
	}
	s.mu.Lock()
	s.counts["accepted"]++
	s.arrivals = append(s.arrivals, arrival{arrived.UnixNano(), req.Destination.ToAddresses[0]})
	s.perSecond[arrived.Unix()]++
	if s.captureMax > 0 {
		headers := map[string]string{"host": r.Host} // Go moves Host out of the header map
		for k := range r.Header {
			headers[strings.ToLower(k)] = r.Header.Get(k)
		}
		s.captures = append(s.captures, captured{headers, buf.String()})
		if len(s.captures) > s.captureMax {
			s.captures = s.captures[len(s.captures)-s.captureMax:]
		}
	}
	s.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-amzn-RequestId", requestID())
	// The id's shape follows SES's (hex, dashes, a region-specific suffix); only uniqueness matters.
	fmt.Fprintf(w, `{"MessageId":"%016x-%s-000000"}`, s.seq.Add(1), idPrefix)
}

func (s *stub) getAccount(w http.ResponseWriter, r *http.Request) {
	s.count("requests")
	if !s.checkAuth(w, r) {
		return
	}
	if kind, _ := s.fault(false, nil, time.Now()); kind != "" {
		s.count(kind)
		answerFault(w, kind)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-amzn-RequestId", requestID())
	s.mu.Lock()
	sent := s.counts["accepted"]
	s.mu.Unlock()
	fmt.Fprintf(w, `{"DedicatedIpAutoWarmupEnabled":false,"EnforcementStatus":"HEALTHY","ProductionAccessEnabled":true,`+
		`"SendQuota":{"Max24HourSend":100000000.0,"MaxSendRate":%s,"SentLast24Hours":%d.0},"SendingEnabled":true}`,
		strconv.FormatFloat(*maxSendRate, 'f', 1, 64), sent)
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func (s *stub) stats(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	counts := make(map[string]int64, len(s.counts))
	for k, v := range s.counts {
		counts[k] = v
	}
	perSecond := make(map[string]int64, len(s.perSecond))
	for k, v := range s.perSecond {
		perSecond[strconv.FormatInt(k, 10)] = v
	}
	s.mu.Unlock()
	// every request the stub read, admin calls included, by whose clock stamped its arrival (arrival.go)
	stamps := map[string]int64{"kernel": s.kernelStamps.Load(), "clock": s.clockStamps.Load()}
	writeJSON(w, map[string]any{"counts": counts, "accepted_per_second": perSecond, "cpu_seconds": cpuSeconds(), "stamps": stamps})
}

func (s *stub) arrivalsFrom(w http.ResponseWriter, r *http.Request) {
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	s.mu.Lock()
	from = min(max(from, 0), len(s.arrivals))
	page := append([]arrival(nil), s.arrivals[from:]...)
	s.mu.Unlock()
	// Columns rather than objects: a run of a million sends stays a few tens of megabytes.
	at := make([]float64, len(page))
	to := make([]string, len(page))
	for i, a := range page {
		at[i], to[i] = float64(a.At)/1e9, a.To
	}
	writeJSON(w, map[string]any{"from": from, "at": at, "to": to})
}

func (s *stub) admin(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_stub/stats" && r.Method == http.MethodGet:
		s.stats(w, r)
	case r.URL.Path == "/_stub/arrivals" && r.Method == http.MethodGet:
		s.arrivalsFrom(w, r)
	case r.URL.Path == "/_stub/captured" && r.Method == http.MethodGet:
		s.mu.Lock()
		page := append([]captured{}, s.captures...)
		s.mu.Unlock()
		writeJSON(w, page)
	case r.URL.Path == "/_stub/faults" && r.Method == http.MethodPost:
		var f Faults
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			http.Error(w, "faults: "+err.Error(), 400)
			return
		}
		if err := s.apply(f); err != nil {
			http.Error(w, "faults: "+err.Error(), 400)
			return
		}
		writeJSON(w, map[string]bool{"ok": true})
	case r.URL.Path == "/_stub/reset" && r.Method == http.MethodPost:
		s.mu.Lock()
		s.arrivals, s.perSecond, s.counts, s.captures = nil, map[int64]int64{}, map[string]int64{}, nil
		s.kernelStamps.Store(0)
		s.clockStamps.Store(0)
		s.mu.Unlock()
		writeJSON(w, map[string]bool{"ok": true})
	default:
		http.Error(w, "unknown admin endpoint "+r.Method+" "+r.URL.Path, 404)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == sendPath && r.Method == http.MethodPost:
		s.sendEmail(w, r)
	case r.URL.Path == accountPath && r.Method == http.MethodGet:
		s.getAccount(w, r)
	case strings.HasPrefix(r.URL.Path, "/_stub/"):
		s.admin(w, r)
	default:
		s.count("unknown_operation")
		errorAnswer(w, 404, "UnknownOperationException", "sesstub answers SendEmail and GetAccount only, not "+r.Method+" "+r.URL.Path)
	}
}

var maxSendRate = flag.Float64("max-send-rate", 14, "the MaxSendRate GetAccount reports")

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "where to listen (port 0: a free one)")
	faults := flag.String("faults", "", "faults to start with, as the JSON of POST /_stub/faults")
	load := flag.String("load", "", "instead of serving: send SendEmail requests to this endpoint and report the rate")
	loadN := flag.Int("n", 50000, "load: requests to send")
	loadC := flag.Int("c", 32, "load: requests in flight")
	loadBody := flag.Int("body", 6000, "load: bytes of (base64) message data per request")
	flag.Parse()
	if *load != "" {
		runLoad(*load, *loadN, *loadC, *loadBody)
		return
	}
	// The live heap is small (buffers, the arrival log), so the default GC target collects very
	// often; a larger target trades some megabytes for a tenth of the CPU per request.
	debug.SetGCPercent(400)
	s := newStub()
	if *faults != "" {
		var f Faults
		dec := json.NewDecoder(strings.NewReader(*faults))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			log.Fatalf("-faults: %v", err)
		}
		if err := s.apply(f); err != nil {
			log.Fatalf("-faults: %v", err)
		}
	}
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen on %s: %v", *addr, err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	os.Stdout.Sync()
	server := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, ConnContext: withConn}
	stampListener(listener)
	log.Fatal(server.Serve(stampedListener{listener, &s.kernelStamps, &s.clockStamps}))
}
