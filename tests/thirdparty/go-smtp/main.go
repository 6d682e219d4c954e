// Go net/smtp driver for `mailtls certify --command`: smtp.SendMail's own steps, with the session CA.
//
//	gosmtp HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS
//
// It does what smtp.SendMail does (EHLO, STARTTLS when offered, AUTH when offered, MAIL/RCPT/DATA), but with
// a tls.Config{RootCAs, ServerName} because SendMail cannot be given a CA. On implicit cells it dials with
// tls.Dial first, as Go programs do for port 465. Exit 0 when the server accepted the message; otherwise Go's
// own error text on stderr, exit 1. GODEBUG works as usual (e.g. GODEBUG=tlsrsakex=1).
package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 10 {
		fmt.Fprintln(os.Stderr, "usage: gosmtp HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS")
		os.Exit(2)
	}
	if err := send(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func send(a []string) error {
	host, port, serverName, caFile, protocol, mode, user, password, address :=
		a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
	if protocol != "smtp" {
		return fmt.Errorf("net/smtp sends mail: protocol %s is not supported", protocol)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	config := &tls.Config{RootCAs: roots, ServerName: serverName}
	addr := net.JoinHostPort(host, port)
	dialer := &net.Dialer{Timeout: 20 * time.Second}
	var conn net.Conn
	if mode == "implicit" {
		conn, err = tls.DialWithDialer(dialer, "tcp", addr, config)
	} else {
		conn, err = dialer.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	// The client's server name is what smtp.PlainAuth compares with its own host argument.
	c, err := smtp.NewClient(conn, serverName)
	if err != nil {
		return err
	}
	defer c.Close()
	if err = c.Hello("mailtls.client"); err != nil {
		return err
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err = c.StartTLS(config); err != nil {
			return err
		}
	}
	if state, ok := c.TLSConnectionState(); ok {
		fmt.Printf("tls: %s %s\n", tls.VersionName(state.Version), tls.CipherSuiteName(state.CipherSuite))
	} else {
		fmt.Println("tls: none")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		// smtp.PlainAuth refuses a connection without TLS, unless the server is named localhost.
		if err = c.Auth(smtp.PlainAuth("", user, password, serverName)); err != nil {
			return err
		}
	}
	if err = c.Mail(address); err != nil {
		return err
	}
	if err = c.Rcpt(address); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	id := hex.EncodeToString(token)
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: pytest-mailtls go-net-smtp %s\r\nMessage-ID: <%s.go@mailtls.test>\r\n\r\nsent by the Go net/smtp driver of pytest-mailtls\r\n", address, address, id, id)
	if _, err = w.Write([]byte(msg)); err != nil {
		return err
	}
	if err = w.Close(); err != nil {
		return err
	}
	fmt.Println("accepted")
	return c.Quit()
}
