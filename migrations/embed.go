// Package migrations holds the versioned schema of the read model. The files are embedded so that the
// migrate command, the services' startup check and the tests all apply exactly the same SQL.
package migrations

import "embed"

// FS holds the migration files, applied in order of their numeric prefix by pressly/goose.
//
//go:embed *.sql
var FS embed.FS
