package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func sendRequestFor(to string, body int) *http.Request {
	payload := fmt.Sprintf(`{"Content":{"Raw":{"Data":"%s"}},"Destination":{"ToAddresses":["%s"]},"FromEmailAddress":"a@example.org"}`,
		strings.Repeat("A", body), to)
	req := httptest.NewRequest(http.MethodPost, sendPath, strings.NewReader(payload))
	req.Header.Set("Authorization", loadAuth)
	req.Header.Set("X-Amz-Date", "20260101T000000Z")
	return req
}

// BenchmarkSendEmail is the handler's own cost per request, without the network.
func BenchmarkSendEmail(b *testing.B) {
	s := newStub()
	for i := 0; i < b.N; i++ {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, sendRequestFor("x@example.org", 6000))
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

func TestSigV4Shape(t *testing.T) {
	good := "AWS4-HMAC-SHA256 Credential=AKID/20261204/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, " +
		"Signature=" + strings.Repeat("a1", 32)
	if !sigV4Shaped(good) {
		t.Fatalf("rejected a well-formed header: %s", good)
	}
	for _, bad := range []string{
		"",
		strings.Replace(good, "/ses/", "/s3/", 1),
		strings.Replace(good, "20261204", "2026124", 1),
		strings.Replace(good, "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1", 1),
		good[:len(good)-1],
		strings.Replace(good, "SignedHeaders=", "Headers=", 1),
	} {
		if sigV4Shaped(bad) {
			t.Errorf("accepted a malformed header: %q", bad)
		}
	}
}

func TestFaultsAndRecording(t *testing.T) {
	s := newStub()
	one := 1.0
	if err := s.apply(Faults{Throttle: &one}); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, sendRequestFor("x@example.org", 100))
	if w.Code != 429 || w.Header().Get("x-amzn-ErrorType") != "TooManyRequestsException" {
		t.Fatalf("throttled: got %d %v", w.Code, w.Header())
	}
	bounce := "bounce"
	if err := s.apply(Faults{Heal: true, Reject: &bounce}); err != nil {
		t.Fatal(err)
	}
	w = httptest.NewRecorder()
	s.ServeHTTP(w, sendRequestFor("Bounce@example.org", 100))
	if w.Code != 400 || w.Header().Get("x-amzn-ErrorType") != "MessageRejected" {
		t.Fatalf("rejected: got %d %v", w.Code, w.Header())
	}
	w = httptest.NewRecorder()
	s.ServeHTTP(w, sendRequestFor("fine@example.org", 100))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"MessageId"`) {
		t.Fatalf("accepted: got %d %s", w.Code, w.Body)
	}
	if len(s.arrivals) != 1 || s.arrivals[0].To != "fine@example.org" {
		t.Fatalf("recorded %v", s.arrivals)
	}
	unsigned := sendRequestFor("fine@example.org", 100)
	unsigned.Header.Del("Authorization")
	w = httptest.NewRecorder()
	s.ServeHTTP(w, unsigned)
	if w.Code != 403 {
		t.Fatalf("unsigned: got %d", w.Code)
	}
}

func TestBodiesNotShapedLikeBotocoreAreDecodedWhole(t *testing.T) {
	for _, body := range []string{
		`{"FromEmailAddress":"a@b.c","Destination":{"ToAddresses":["x@y.z"]},"Content":{"Raw":{"Data":"QUJD\/"}}}`,
		`{"FromEmailAddress":"a@b.c","Destination":{"ToAddresses":["x@y.z"]},"Content": {"Raw": {"Data": "QUJD"}}}`,
	} {
		var req sendRequest
		if err := decodeSend([]byte(body), &req); err != nil || req.Content.Raw == nil || len(req.Content.Raw.Data) < 6 ||
			req.Destination.ToAddresses[0] != "x@y.z" {
			t.Errorf("%s: %v %+v", body, err, req)
		}
	}
	var req sendRequest
	if err := decodeSend([]byte(`{"Content":{"Raw":{"Data":"QUJD"}},"Destination":{"ToAddresses":["x"`), &req); err == nil {
		t.Errorf("a truncated body decoded")
	}
}

// slowAccept accepts each connection only after a delay, as a stub whose process is not scheduled.
type slowAccept struct {
	net.Listener
	delay time.Duration
}

func (l slowAccept) Accept() (net.Conn, error) {
	time.Sleep(l.delay)
	return l.Listener.Accept()
}

// TestArrivalIsTheKernelsReceiveTime: a request is stamped when its bytes reached the stub's socket,
// not when the stub got around to reading them.
func TestArrivalIsTheKernelsReceiveTime(t *testing.T) {
	s := newStub()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stampListener(listener)
	const late = 400 * time.Millisecond
	server := &http.Server{Handler: s, ConnContext: withConn}
	go server.Serve(stampedListener{slowAccept{listener, late}, &s.kernelStamps, &s.clockStamps})
	defer server.Close()

	conn, err := net.Dial("tcp", listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var request bytes.Buffer
	if err := sendRequestFor("x@example.org", 100).Write(&request); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if _, err := conn.Write(request.Bytes()); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	response, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	if response.StatusCode != 200 {
		t.Fatalf("status %d", response.StatusCode)
	}
	if answered.Sub(sent) < late {
		t.Fatalf("answered %v after the write: the stub did not accept late, the test proves nothing", answered.Sub(sent))
	}
	s.mu.Lock()
	at := time.Unix(0, s.arrivals[0].At)
	s.mu.Unlock()
	if drift := at.Sub(sent); drift < -time.Millisecond || drift > late/4 {
		t.Fatalf("arrival stamped %v after the write (accepted %v late): not the kernel's receive time", drift, late)
	}
	if s.kernelStamps.Load() != 1 || s.clockStamps.Load() != 0 {
		t.Fatalf("stamps: kernel %d, clock %d", s.kernelStamps.Load(), s.clockStamps.Load())
	}
}
