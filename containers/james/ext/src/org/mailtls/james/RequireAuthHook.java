package org.mailtls.james;

import org.apache.james.core.MaybeSender;
import org.apache.james.protocols.smtp.SMTPSession;
import org.apache.james.protocols.smtp.hook.HookResult;
import org.apache.james.protocols.smtp.hook.HookReturnCode;
import org.apache.james.protocols.smtp.hook.MailHook;

/**
 * AUTH required: refuses MAIL FROM until the client authenticated.
 * James only demands authentication for relaying; mail to local users is accepted from anyone.
 */
public class RequireAuthHook implements MailHook {
    @Override
    public HookResult doMail(SMTPSession session, MaybeSender sender) {
        if (session.getUsername() != null) {
            return HookResult.DECLINED;
        }
        return HookResult.builder()
            .hookReturnCode(HookReturnCode.deny())
            .smtpReturnCode("530")
            .smtpDescription("5.7.0 Authentication required")
            .build();
    }
}
