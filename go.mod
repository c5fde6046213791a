module github.com/fusegate/fusegate

go 1.26.8

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/pelletier/go-toml/v2 v2.4.3
	github.com/sirupsen/logrus v1.10.2
	golang.org/x/sys v0.49.0
)
