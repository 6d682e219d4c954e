package mailtls;

import jakarta.mail.Folder;
import jakarta.mail.Message;
import jakarta.mail.Session;
import jakarta.mail.Store;
import jakarta.mail.Transport;
import jakarta.mail.internet.InternetAddress;
import jakarta.mail.internet.MimeMessage;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Reader;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.Security;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import java.util.Properties;
import java.util.TreeSet;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManagerFactory;
import org.eclipse.angus.mail.util.MailSSLSocketFactory;

/**
 * One session of a Jakarta Mail (Angus Mail) client against one endpoint, driven by session properties.
 *
 * <p>Usage: {@code java -cp 'mailtls-client.jar:lib/*' mailtls.MailTlsClient REQUEST.properties}. The request holds
 * the {@code mail.*} session properties verbatim plus {@code client.*} keys (protocol, host, port, user, password,
 * send, from, to, ca_file, keystore). Prints one JSON object on stdout: ok, error, exception, causes, version,
 * cipher, tls, transcript. Exit status 0 when the session succeeded.
 *
 * <p>Batch mode: {@code ... mailtls.MailTlsClient --batch} reads one request file path per line on stdin and answers
 * each with one JSON line on stdout, in order, until stdin closes. Every job gets its own Session, SSLContext and
 * socket factory; nothing but the loaded classes is shared between jobs.
 */
public final class MailTlsClient {

    private MailTlsClient() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && "--batch".equals(args[0])) {
            batch();
            return;
        }
        Result result = run(load(args[0]));
        System.out.println(result.toJson());
        System.out.flush();
        System.exit(result.ok ? 0 : 1);
    }

    private static Properties load(String file) throws java.io.IOException {
        Properties request = new Properties();
        try (Reader reader = Files.newBufferedReader(Path.of(file), StandardCharsets.UTF_8)) {
            request.load(reader);
        }
        return request;
    }

    /** Serve jobs from stdin until it closes; stdout carries only the result lines. */
    private static void batch() throws java.io.IOException {
        // The driver rewrites the jdk.net.hosts.file between jobs: no cached lookups may outlive a job.
        Security.setProperty("networkaddress.cache.ttl", "0");
        Security.setProperty("networkaddress.cache.negative.ttl", "0");
        PrintStream answers = System.out;
        System.setOut(System.err); // stray prints from libraries must not corrupt the protocol
        BufferedReader jobs = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = jobs.readLine(); line != null; line = jobs.readLine()) {
            if (line.isBlank()) {
                continue;
            }
            Result result;
            try {
                result = run(load(line.strip()));
            } catch (Throwable exc) {
                result = new Result();
                result.exception = exc.getClass().getName();
                result.error = "could not read the request " + line.strip() + ": " + exc.getMessage();
            }
            answers.println(result.toJson());
            answers.flush();
        }
    }

    static Result run(Properties request) {
        Result result = new Result();
        ByteArrayOutputStream debug = new ByteArrayOutputStream();
        RecordingFactory recorder = null;
        String protocol = request.getProperty("client.protocol", "smtp");
        String prefix = "mail." + protocol;
        try {
            Properties props = new Properties();
            for (String key : request.stringPropertyNames()) {
                if (key.startsWith("mail.")) {
                    props.setProperty(key, request.getProperty(key));
                }
            }
            result.note("session properties: " + describe(props));
            recorder = new RecordingFactory(baseFactory(request, props, prefix));
            // ssl.trust is embodied in the base factory; leaving it set would make Angus build its own factory.
            props.remove(prefix + ".ssl.trust");
            props.put(prefix + ".ssl.socketFactory", recorder);
            Session session = Session.getInstance(props);
            session.setDebugOut(new PrintStream(debug, true, StandardCharsets.UTF_8));
            session.setDebug(true);

            String host = request.getProperty("client.host");
            int port = Integer.parseInt(request.getProperty("client.port"));
            String user = request.getProperty("client.user");
            String password = request.getProperty("client.password");
            boolean send = Boolean.parseBoolean(request.getProperty("client.send", "true"));
            if ("smtp".equals(protocol)) {
                Transport transport = session.getTransport("smtp");
                try {
                    transport.connect(host, port, user, password);
                    recorder.capture(result);
                    if (send) {
                        MimeMessage message = new MimeMessage(session);
                        message.setFrom(new InternetAddress(request.getProperty("client.from")));
                        message.setRecipients(Message.RecipientType.TO, request.getProperty("client.to"));
                        message.setSubject(request.getProperty("client.subject", "pytest-mailtls certify"));
                        message.setHeader("Message-ID", request.getProperty("client.message_id"));
                        message.setSentDate(new Date());
                        message.setText(request.getProperty("client.body", "sent by the Jakarta Mail client\n"));
                        message.saveChanges();
                        message.setHeader("Message-ID", request.getProperty("client.message_id"));
                        transport.sendMessage(message, message.getAllRecipients());
                    }
                } finally {
                    recorder.capture(result);
                    transport.close();
                }
            } else {
                Store store = session.getStore(protocol);
                try {
                    store.connect(host, port, user, password);
                    recorder.capture(result);
                    Folder inbox = store.getFolder("INBOX");
                    inbox.open(Folder.READ_ONLY);
                    result.note("INBOX holds " + inbox.getMessageCount() + " messages");
                    inbox.close(false);
                } finally {
                    recorder.capture(result);
                    store.close();
                }
            }
            result.ok = true;
        } catch (Throwable exc) {
            result.ok = false;
            result.exception = exc.getClass().getName();
            result.error = String.valueOf(exc.getMessage());
            for (Throwable cause = exc.getCause(); cause != null && result.causes.size() < 8; cause = cause.getCause()) {
                result.causes.add(cause.getClass().getName() + ": " + cause.getMessage());
            }
            if (recorder != null) {
                recorder.capture(result);
            }
        }
        result.transcript = debug.toString(StandardCharsets.UTF_8);
        return result;
    }

    /** The factory before recording: trust-all when ssl.trust is "*", else a truststore made from the CA file. */
    private static SSLSocketFactory baseFactory(Properties request, Properties props, String prefix) throws Exception {
        KeyManager[] keyManagers = null;
        String keystore = request.getProperty("client.keystore");
        if (keystore != null && !keystore.isEmpty()) {
            char[] secret = request.getProperty("client.keystore_password", "").toCharArray();
            KeyStore ks = KeyStore.getInstance("PKCS12");
            try (InputStream in = Files.newInputStream(Path.of(keystore))) {
                ks.load(in, secret);
            }
            KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(ks, secret);
            keyManagers = kmf.getKeyManagers();
        }
        if ("*".equals(props.getProperty(prefix + ".ssl.trust"))) {
            MailSSLSocketFactory trustAll = new MailSSLSocketFactory();
            trustAll.setTrustAllHosts(true);
            if (keyManagers != null) {
                trustAll.setKeyManagers(keyManagers);
            }
            return trustAll;
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        String caFile = request.getProperty("client.ca_file");
        if (caFile != null && !caFile.isEmpty()) {
            KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
            trust.load(null, null);
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            try (InputStream in = Files.newInputStream(Path.of(caFile))) {
                int i = 0;
                for (Certificate cert : cf.generateCertificates(in)) {
                    trust.setCertificateEntry("ca-" + i++, cert);
                }
            }
            tmf.init(trust);
        } else {
            tmf.init((KeyStore) null); // the JDK's cacerts
        }
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(keyManagers, tmf.getTrustManagers(), null);
        return context.getSocketFactory();
    }

    private static String describe(Properties props) {
        List<String> parts = new ArrayList<>();
        for (String key : new TreeSet<>(props.stringPropertyNames())) {
            parts.add(key + "=" + props.getProperty(key));
        }
        return String.join(", ", parts);
    }

    /** Delegates every socket creation and remembers the last TLS socket, to read the negotiated session. */
    static final class RecordingFactory extends SSLSocketFactory {
        private final SSLSocketFactory delegate;
        private volatile SSLSocket last;

        RecordingFactory(SSLSocketFactory delegate) {
            this.delegate = delegate;
        }

        private Socket keep(Socket socket) {
            if (socket instanceof SSLSocket) {
                last = (SSLSocket) socket;
            }
            return socket;
        }

        void capture(Result result) {
            SSLSocket socket = last;
            if (socket == null) {
                return;
            }
            SSLSession session = socket.getSession();
            String suite = session.getCipherSuite();
            if (suite != null && !suite.startsWith("SSL_NULL")) {
                result.version = session.getProtocol();
                result.cipher = suite;
            }
        }

        @Override
        public String[] getDefaultCipherSuites() {
            return delegate.getDefaultCipherSuites();
        }

        @Override
        public String[] getSupportedCipherSuites() {
            return delegate.getSupportedCipherSuites();
        }

        @Override
        public Socket createSocket() throws java.io.IOException {
            return keep(delegate.createSocket());
        }

        @Override
        public Socket createSocket(Socket s, String host, int port, boolean autoClose) throws java.io.IOException {
            return keep(delegate.createSocket(s, host, port, autoClose));
        }

        @Override
        public Socket createSocket(String host, int port) throws java.io.IOException {
            return keep(delegate.createSocket(host, port));
        }

        @Override
        public Socket createSocket(String host, int port, InetAddress local, int localPort) throws java.io.IOException {
            return keep(delegate.createSocket(host, port, local, localPort));
        }

        @Override
        public Socket createSocket(InetAddress host, int port) throws java.io.IOException {
            return keep(delegate.createSocket(host, port));
        }

        @Override
        public Socket createSocket(InetAddress address, int port, InetAddress local, int localPort)
                throws java.io.IOException {
            return keep(delegate.createSocket(address, port, local, localPort));
        }
    }

    static final class Result {
        boolean ok;
        String error = "";
        String exception = "";
        final List<String> causes = new ArrayList<>();
        final List<String> notes = new ArrayList<>();
        String version;
        String cipher;
        String transcript = "";

        void note(String text) {
            notes.add(text);
        }

        String toJson() {
            StringBuilder out = new StringBuilder("{");
            out.append("\"ok\":").append(ok);
            out.append(",\"error\":").append(quote(error));
            out.append(",\"exception\":").append(quote(exception));
            out.append(",\"causes\":").append(list(causes));
            out.append(",\"notes\":").append(list(notes));
            out.append(",\"version\":").append(version == null ? "null" : quote(version));
            out.append(",\"cipher\":").append(cipher == null ? "null" : quote(cipher));
            out.append(",\"transcript\":").append(quote(transcript));
            return out.append("}").toString();
        }

        private static String list(List<String> items) {
            List<String> quoted = new ArrayList<>();
            for (String item : items) {
                quoted.add(quote(item));
            }
            return "[" + String.join(",", quoted) + "]";
        }

        private static String quote(String text) {
            StringBuilder out = new StringBuilder("\"");
            for (char c : String.valueOf(text).toCharArray()) {
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                    }
                }
            }
            return out.append('"').toString();
        }
    }
}
