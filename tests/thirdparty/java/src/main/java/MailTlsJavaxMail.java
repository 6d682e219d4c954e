// javax.mail 1.4.5 driver for `mailtls certify --command`: one message, configured as its 2012 FAQ shows.
//
//   java -cp 'javaxmail-driver.jar:lib/*' MailTlsJavaxMail HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS
//
// Properties are the ones a user of the time set: mail.smtp.host/port, mail.smtp.auth=true,
// mail.smtp.starttls.enable=true (smtps on implicit cells), and an SSL socket factory trusting the session CA.
// mail.smtp.ssl.protocols stays UNSET on purpose: javax.mail 1.4.5 then enables only TLSv1 on every socket.
// Exit 0 when the server accepted the message; otherwise the exception chain on stderr, exit 1.
// MAILTLS_DEBUG=1 turns on javax.mail's session debug output (on stdout).

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.security.KeyStore;
import java.security.SecureRandom;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.Properties;
import javax.mail.Message;
import javax.mail.Session;
import javax.mail.Transport;
import javax.mail.internet.InternetAddress;
import javax.mail.internet.MimeMessage;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManagerFactory;

public final class MailTlsJavaxMail {

    public static void main(String[] args) {
        if (args.length != 9) {
            System.err.println("usage: MailTlsJavaxMail HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS");
            System.exit(2);
        }
        try {
            send(args);
        } catch (Exception e) {
            // MessagingException.toString() carries its nested exception; add the rest of the cause chain.
            System.err.println(e);
            for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
                System.err.println("caused by: " + c);
            }
            System.exit(1);
        }
        System.exit(0);
    }

    private static void send(String[] a) throws Exception {
        String host = a[0], port = a[1], caFile = a[3], protocol = a[4], mode = a[5];
        String user = a[6], password = a[7], address = a[8];
        if (!protocol.equals("smtp")) {
            throw new IllegalArgumentException("this driver sends mail: protocol " + protocol + " is not supported");
        }
        String proto = mode.equals("implicit") ? "smtps" : "smtp";
        Properties props = new Properties();
        props.put("mail." + proto + ".host", host);
        props.put("mail." + proto + ".port", port);
        props.put("mail." + proto + ".auth", "true");
        props.put("mail.smtp.starttls.enable", "true");
        props.put("mail." + proto + ".connectiontimeout", "20000");
        props.put("mail." + proto + ".timeout", "20000");
        props.put("mail." + proto + ".ssl.socketFactory", new Reporting(trusting(caFile)));
        Session session = Session.getInstance(props);
        session.setDebug(System.getenv("MAILTLS_DEBUG") != null);
        String token = Long.toHexString(new SecureRandom().nextLong() & Long.MAX_VALUE);
        MimeMessage msg = new MimeMessage(session) {
            @Override
            protected void updateMessageID() throws javax.mail.MessagingException {
                setHeader("Message-ID", "<" + token + ".javaxmail@mailtls.test>");
            }
        };
        msg.setFrom(new InternetAddress(address));
        msg.setRecipient(Message.RecipientType.TO, new InternetAddress(address));
        msg.setSubject("pytest-mailtls javax.mail-1.4.5 " + token);
        msg.setText("sent by the javax.mail 1.4.5 driver of pytest-mailtls\n");
        Transport transport = session.getTransport(proto);
        try {
            transport.connect(host, Integer.parseInt(port), user, password);
            msg.saveChanges();
            transport.sendMessage(msg, msg.getAllRecipients());
        } finally {
            transport.close();
        }
        System.out.println("accepted");
    }

    /** A socket factory whose trust store holds the certificates of caFile (PEM). */
    private static SSLSocketFactory trusting(String caFile) throws Exception {
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        try (InputStream in = new FileInputStream(caFile)) {
            int i = 0;
            for (Certificate cert : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                store.setCertificateEntry("ca" + i++, cert);
            }
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(store);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(null, tmf.getTrustManagers(), null);
        return context.getSocketFactory();
    }

    /** Delegates to the trusting factory and prints the negotiated version and suite of each handshake. */
    private static final class Reporting extends SSLSocketFactory {
        private final SSLSocketFactory inner;

        Reporting(SSLSocketFactory inner) {
            this.inner = inner;
        }

        private Socket report(Socket s) {
            if (s instanceof SSLSocket) {
                ((SSLSocket) s).addHandshakeCompletedListener(
                        ev -> System.out.println("tls: " + ev.getSession().getProtocol() + " " + ev.getCipherSuite()));
            }
            return s;
        }

        @Override public String[] getDefaultCipherSuites() { return inner.getDefaultCipherSuites(); }
        @Override public String[] getSupportedCipherSuites() { return inner.getSupportedCipherSuites(); }
        @Override public Socket createSocket() throws IOException { return report(inner.createSocket()); }
        @Override public Socket createSocket(Socket s, String h, int p, boolean c) throws IOException {
            return report(inner.createSocket(s, h, p, c));
        }
        @Override public Socket createSocket(String h, int p) throws IOException { return report(inner.createSocket(h, p)); }
        @Override public Socket createSocket(String h, int p, InetAddress l, int lp) throws IOException {
            return report(inner.createSocket(h, p, l, lp));
        }
        @Override public Socket createSocket(InetAddress h, int p) throws IOException { return report(inner.createSocket(h, p)); }
        @Override public Socket createSocket(InetAddress h, int p, InetAddress l, int lp) throws IOException {
            return report(inner.createSocket(h, p, l, lp));
        }
    }
}
