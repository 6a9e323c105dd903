package main

import (
	"crypto/tls"
	"net/http"
)

func insecureTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // liveness check of a loopback emulator only
	return tr
}
