package org.mailtls.james;

import java.util.Collection;
import java.util.List;

import org.apache.james.protocols.api.Request;
import org.apache.james.protocols.api.Response;
import org.apache.james.protocols.api.handler.CommandHandler;
import org.apache.james.protocols.smtp.SMTPResponse;
import org.apache.james.protocols.smtp.SMTPSession;

/**
 * SMTP without AUTH (an MX port): answers every AUTH with 503, in clear and inside TLS, as
 * Postfix does when SASL is off, so the refusal reads the same on every backend. James'
 * {@code <announce>never</announce>} only hides AUTH from EHLO.
 */
public class NoAuthHandler implements CommandHandler<SMTPSession> {
    @Override
    public Response onCommand(SMTPSession session, Request request) {
        return new SMTPResponse("503", "5.5.1 Error: authentication not enabled");
    }

    @Override
    public Collection<String> getImplCommands() {
        return List.of("AUTH");
    }
}
