package mysql

// UserRowsSQL is the statement of a user's list and version, for the tests of how vtgate routes it.
var UserRowsSQL = userRowsSQL
