package foundation

import (
	"testing"

	"github.com/fusegate/fusegate/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
