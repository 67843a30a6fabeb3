package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
)

type metrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	panics   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conv_api_requests_total",
			Help: "HTTP requests answered, by route (the registered path, \"unmatched\" for none) and status code.",
		}, []string{"route", "status"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "conv_api_request_seconds",
			Help:    "Time to answer an HTTP request, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conv_api_panics_total",
			Help: "Handler panics recovered into a 500 response.",
		}),
	}
	if err := errors.Join(reg.Register(m.requests), reg.Register(m.seconds), reg.Register(m.panics)); err != nil {
		return nil, fmt.Errorf("register API metrics: %w", err)
	}
	return m, nil
}

// route is the metric and log label of a request: the registered path, never the raw URL, so unknown
// paths cannot blow up the label set.
func route(c *gin.Context) string {
	if p := c.FullPath(); p != "" {
		return p
	}
	return "unmatched"
}

// observe counts and times every request and writes the access log line: method, route, status and
// duration, never bodies, query strings or headers (they may carry tokens).
func (a *api) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	elapsed := time.Since(start)
	rt, status := route(c), c.Writer.Status()
	a.metrics.requests.WithLabelValues(rt, strconv.Itoa(status)).Inc()
	a.metrics.seconds.WithLabelValues(rt).Observe(elapsed.Seconds())
	level := slog.LevelInfo
	if rt == "/healthz" || rt == "/readyz" || rt == "/metrics" {
		level = slog.LevelDebug // probes and scrapes would drown the log
	}
	a.log.LogAttrs(c.Request.Context(), level, "http request",
		slog.String("method", c.Request.Method),
		slog.String("route", rt),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
	)
}

// recoverPanics turns a handler panic into a logged, counted 500 with the usual JSON body, instead of
// a dropped connection.
func (a *api) recoverPanics(c *gin.Context) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler { // net/http's way to abort a response: let it through
			panic(v)
		}
		a.metrics.panics.Inc()
		a.log.Error("handler panicked", "route", route(c), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		c.Abort()
		if !c.Writer.Written() {
			writeJSON(c, http.StatusInternalServerError, errorBody{Msg: msgInternal, Status: http.StatusInternalServerError})
		}
	}()
	c.Next()
}

// requireToken accepts only requests with "Authorization: Bearer <token>". Both sides are hashed
// before the constant-time comparison, so neither the token's bytes nor its length leak through timing.
func requireToken(token string) gin.HandlerFunc {
	want := sha256.Sum256([]byte(token))
	return func(c *gin.Context) {
		scheme, got, ok := strings.Cut(c.GetHeader("Authorization"), " ")
		sum := sha256.Sum256([]byte(got))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			c.Header("WWW-Authenticate", `Bearer realm="conversations"`)
			writeError(c, errUnauthorized)
			c.Abort()
			return
		}
		c.Next()
	}
}

// handle adapts a handler that returns an error: the error becomes the response through statusOf, and
// a server fault is logged here, once.
func (a *api) handle(h func(c *gin.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		err := h(c)
		if err == nil {
			return
		}
		status := writeError(c, err)
		if status >= http.StatusInternalServerError {
			level := slog.LevelError
			if errors.Is(err, context.Canceled) {
				level = slog.LevelInfo // the client went away; nothing is wrong here
			}
			a.log.Log(c.Request.Context(), level, "request failed", "route", route(c), "status", status, "error", err.Error())
		}
	}
}

// errorBody is WuKongIM's error shape: {"msg": "...", "status": 400}.
type errorBody struct {
	Msg    string `json:"msg"`
	Status int    `json:"status"`
}

// okBody is the body of every successful mutation; a real client reads status from it.
var okBody = []byte(`{"status":200}`)

const contentTypeJSON = "application/json; charset=utf-8"

func writeError(c *gin.Context, err error) int {
	status, msg := statusOf(err)
	writeJSON(c, status, errorBody{Msg: msg, Status: status})
	return status
}

// writeJSON writes v without HTML escaping, so a message reads "limit must be >= 0", not "\u003e=".
func writeJSON(c *gin.Context, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // only our own fixed types get here; they always encode
		status = http.StatusInternalServerError
		b.Reset()
		b.WriteString(`{"msg":"internal error","status":500}`)
	}
	c.Data(status, contentTypeJSON, bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

func (a *api) healthz(c *gin.Context) { c.Data(http.StatusOK, contentTypeJSON, okBody) }

// readyz answers 200 when the database answers a ping, else 503.
func (a *api) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := a.store.Ping(ctx); err != nil {
		a.handle(func(*gin.Context) error {
			return fmt.Errorf("readiness: %w: %w", conversation.ErrUnavailable, err)
		})(c)
		return
	}
	if a.opts.Replicas == nil {
		c.Data(http.StatusOK, contentTypeJSON, okBody)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": http.StatusOK, "replicas": a.opts.Replicas()})
}
