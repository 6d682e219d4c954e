package org.mailtls.james;

import org.apache.james.core.MaybeSender;
import org.apache.james.protocols.smtp.SMTPSession;
import org.apache.james.protocols.smtp.hook.HookResult;
import org.apache.james.protocols.smtp.hook.HookReturnCode;
import org.apache.james.protocols.smtp.hook.MailHook;

/**
 * STARTTLS required: refuses MAIL FROM on a connection that is not (yet) in TLS.
 * James itself can only hide AUTH before TLS; it has no setting that refuses mail in plaintext.
 */
public class RequireTlsHook implements MailHook {
    @Override
    public HookResult doMail(SMTPSession session, MaybeSender sender) {
        if (session.isTLSStarted()) {
            return HookResult.DECLINED;
        }
        return HookResult.builder()
            .hookReturnCode(HookReturnCode.deny())
            .smtpReturnCode("530")
            .smtpDescription("5.7.0 Must issue a STARTTLS command first")
            .build();
    }
}
