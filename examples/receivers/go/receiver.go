// Minimal ProductBridge webhook receiver: Go, standard library only.
//
//	WEBHOOK_SECRET=whsec_... PORT=8080 go run receiver.go
//
// Verifies X-ProductBridge-Signature (sha256=<hex HMAC-SHA256 of the raw body>)
// in constant time; answers 204 when it verifies, 401 when it does not.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
)

func verify(secret string, rawBody []byte, header string) bool {
	if !strings.HasPrefix(header, "sha256=") {
		return false
	}
	received := strings.TrimPrefix(header, "sha256=")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(rawBody)
	expected := hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(received), []byte(expected))
}

// orDash keeps the log line readable when a header is missing.
func orDash(value string) string {
	if value == "" {
		return "-"
	}
	return value
}

func main() {
	secret := os.Getenv("WEBHOOK_SECRET")
	if secret == "" {
		log.Fatal("WEBHOOK_SECRET is not set")
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		// The raw bytes as sent: never verify a re-marshalled json.Unmarshal result.
		rawBody, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ok := verify(secret, rawBody, r.Header.Get("X-ProductBridge-Signature"))
		verified := "no"
		if ok {
			verified = "yes"
			// Handle json.Unmarshal(rawBody, ...) here, idempotently per delivery id.
		}
		fmt.Printf("event=%s delivery=%s verified=%s\n",
			orDash(r.Header.Get("X-ProductBridge-Event")), orDash(r.Header.Get("X-ProductBridge-Delivery-Id")), verified)
		if ok {
			w.WriteHeader(http.StatusNoContent)
		} else {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})

	fmt.Printf("listening on http://127.0.0.1:%s/\n", port)
	log.Fatal(http.ListenAndServe("127.0.0.1:"+port, nil))
}
