package org.mailtls.james;

import java.io.IOException;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.commons.configuration2.Configuration;
import org.apache.james.protocols.smtp.SMTPSession;
import org.apache.james.protocols.smtp.hook.HookResult;
import org.apache.james.smtpserver.JamesMessageHook;
import org.apache.mailet.Mail;

/**
 * Writes every accepted message into a Maildir named after the local port that received it
 * ({directory}/{port}/new/), so the test harness can tell which cell got which mail.
 * Returns DECLINED: James goes on with the message as usual.
 */
public class MaildirCaptureHook implements JamesMessageHook {
    private static final AtomicLong COUNTER = new AtomicLong();
    private static final String PID = String.valueOf(ProcessHandle.current().pid());
    private Path root = Paths.get("/mailtls/mail");

    @Override
    public void init(Configuration config) {
        root = Paths.get(config.getString("directory", root.toString()));
    }

    @Override
    public HookResult onMessage(SMTPSession session, Mail mail) {
        Path maildir = root.resolve(String.valueOf(session.getLocalAddress().getPort()));
        long now = System.currentTimeMillis();
        String name = (now / 1000) + ".M" + (now % 1000) + "P" + PID + "Q" + COUNTER.incrementAndGet() + ".james";
        try {
            Files.createDirectories(maildir.resolve("tmp"));
            Files.createDirectories(maildir.resolve("new"));
            Files.createDirectories(maildir.resolve("cur"));
            Path tmp = maildir.resolve("tmp").resolve(name);
            try (OutputStream out = Files.newOutputStream(tmp)) {
                mail.getMessage().writeTo(out);
            }
            Files.move(tmp, maildir.resolve("new").resolve(name), StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | javax.mail.MessagingException e) {
            // A capture that silently fails would make tests lie: refuse the message instead.
            return HookResult.DENYSOFT;
        }
        return HookResult.DECLINED;
    }
}
