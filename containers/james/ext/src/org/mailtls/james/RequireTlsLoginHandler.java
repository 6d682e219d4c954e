package org.mailtls.james;

import java.util.Collection;
import java.util.List;

import org.apache.james.protocols.api.Request;
import org.apache.james.protocols.api.Response;
import org.apache.james.protocols.api.handler.CommandHandler;
import org.apache.james.protocols.pop3.POP3Response;
import org.apache.james.protocols.pop3.POP3Session;

/**
 * POP3 logins only inside TLS: answers USER/PASS/APOP with -ERR until STLS (or on implicit TLS).
 * Listed before James' core handlers, it answers first; returning null hands the command on.
 */
public class RequireTlsLoginHandler implements CommandHandler<POP3Session> {
    @Override
    public Response onCommand(POP3Session session, Request request) {
        if (session.isTLSStarted()) {
            return null;
        }
        return new POP3Response(POP3Response.ERR_RESPONSE, "[AUTH] Plaintext authentication disallowed; issue STLS first")
            .immutable();
    }

    @Override
    public Collection<String> getImplCommands() {
        return List.of("USER", "PASS", "APOP");
    }
}
