package main

import (
	"os"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestMain sets gin's process-wide mode as main does, so that run's tests serve what production serves.
func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}
