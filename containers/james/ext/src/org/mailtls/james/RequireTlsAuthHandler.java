package org.mailtls.james;

import java.util.Collection;
import java.util.List;

import org.apache.james.protocols.api.Request;
import org.apache.james.protocols.api.Response;
import org.apache.james.protocols.api.handler.CommandHandler;
import org.apache.james.protocols.smtp.SMTPResponse;
import org.apache.james.protocols.smtp.SMTPSession;

/**
 * SMTP AUTH only inside TLS: answers AUTH with 530 until STARTTLS (RFC 3207 section 4).
 * James' own {@code <requireSSL>} only hides AUTH from EHLO: its AuthCmdHandler still answers
 * 235 to AUTH sent in clear. Listed before James' core handlers, this handler answers first;
 * returning null hands the command on.
 */
public class RequireTlsAuthHandler implements CommandHandler<SMTPSession> {
    @Override
    public Response onCommand(SMTPSession session, Request request) {
        if (session.isTLSStarted()) {
            return null;
        }
        return new SMTPResponse("530", "5.7.0 Must issue a STARTTLS command first");
    }

    @Override
    public Collection<String> getImplCommands() {
        return List.of("AUTH");
    }
}
