module github.com/fusegate/fusegate

go 1.26.8
