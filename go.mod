module github.com/fusegate/fusegate

go 1.26.8

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/pelletier/go-toml/v2 v2.4.3
	github.com/sirupsen/logrus v1.10.2
	golang.org/x/sys v0.49.0
)

require github.com/godbus/dbus/v5 v5.2.4

require (
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.1 // indirect
	github.com/prometheus/common v0.62.0
	google.golang.org/protobuf v1.36.1 // indirect
)
