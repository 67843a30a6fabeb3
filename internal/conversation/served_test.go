package conversation

import (
	"testing"
	"time"
)

// An answer made of several reads is as current as the oldest and from the outage path if any was.
func TestServedJoin(t *testing.T) {
	t1, t2 := time.UnixMilli(1000), time.UnixMilli(2000)
	for _, tc := range []struct {
		name string
		a, b Served
		want Served
	}{
		{"both read now", Served{}, Served{}, Served{}},
		{"one from memory", Served{}, Served{AsOf: t2}, Served{AsOf: t2}},
		{"the other from memory", Served{AsOf: t1}, Served{}, Served{AsOf: t1}},
		{"the older wins", Served{AsOf: t2}, Served{AsOf: t1}, Served{AsOf: t1}},
		{"the older wins either way", Served{AsOf: t1}, Served{AsOf: t2}, Served{AsOf: t1}},
		{"outage on one side", Served{AsOf: t2}, Served{Outage: true}, Served{AsOf: t2, Outage: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.Join(tc.b); got != tc.want {
				t.Errorf("%+v.Join(%+v) = %+v, want %+v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
