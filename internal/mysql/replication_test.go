package mysql_test

import (
	"testing"

	"github.com/convsync/conversations/internal/mysql"
)

func TestPositionCovers(t *testing.T) {
	maria := func(s string) mysql.Position {
		p, err := mysql.ParseMariaDBPosition(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	my := func(s string) mysql.Position {
		p, err := mysql.ParseMySQLGTIDSet(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name string
		have mysql.Position
		want mysql.Position
		ok   bool
	}{
		{"MariaDB: the same position", maria("0-1-120"), maria("0-1-120"), true},
		{"MariaDB: further in the domain", maria("0-1-121"), maria("0-1-120"), true},
		{"MariaDB: behind in the domain", maria("0-1-119"), maria("0-1-120"), false},
		{"MariaDB: the seq counts whatever server wrote it", maria("0-2-130"), maria("0-1-120"), true},
		{"MariaDB: a domain it has not seen", maria("0-1-500"), maria("0-1-120,1-3-4"), false},
		{"MariaDB: empty primary position", maria("0-1-5"), maria(""), true},
		{"MariaDB: empty replica position", maria(""), maria("0-1-1"), false},
		{"MySQL: interval inside", my("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100"), my("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77"), true},
		{"MySQL: a gap", my("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-50:52-100"), my("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77"), false},
		{"MySQL: adjacent intervals merge", my("a:1-5:6-10,\nb:1"), my("a:3-8,b:1"), true},
		{"MySQL: another source missing", my("a:1-10"), my("a:1-10,b:1-2"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.have.Covers(c.want); got != c.ok {
				t.Errorf("%s covers %s = %v, want %v", c.have, c.want, got, c.ok)
			}
		})
	}
}

func TestPositionParseErrors(t *testing.T) {
	for _, s := range []string{"0-1", "x-1-2", "0-1-x"} {
		if _, err := mysql.ParseMariaDBPosition(s); err == nil {
			t.Errorf("ParseMariaDBPosition(%q) = nil error", s)
		}
	}
	for _, s := range []string{"a:1-x", "a:5-3"} {
		if _, err := mysql.ParseMySQLGTIDSet(s); err == nil {
			t.Errorf("ParseMySQLGTIDSet(%q) = nil error", s)
		}
	}
}
