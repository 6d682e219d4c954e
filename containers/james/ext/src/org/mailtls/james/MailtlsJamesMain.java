package org.mailtls.james;

import org.apache.commons.configuration2.BaseHierarchicalConfiguration;
import org.apache.james.ExtraProperties;
import org.apache.james.FakeSearchMailboxModule;
import org.apache.james.GuiceJamesServer;
import org.apache.james.JamesServerMain;
import org.apache.james.MemoryJamesConfiguration;
import org.apache.james.MemoryJamesServerMain;
import org.apache.james.data.UsersRepositoryModuleChooser;
import org.apache.james.modules.RunArgumentsModule;
import org.apache.james.modules.data.MemoryUsersRepositoryModule;
import org.apache.james.modules.protocols.IMAPServerModule;
import org.apache.james.modules.protocols.POP3ServerModule;
import org.apache.james.modules.protocols.ProtocolHandlerModule;
import org.apache.james.modules.protocols.SMTPServerModule;
import org.apache.james.modules.server.DataRoutesModules;
import org.apache.james.modules.server.MailetContainerModule;
import org.apache.james.modules.server.NoJwtModule;
import org.apache.james.modules.server.RawPostDequeueDecoratorModule;
import org.apache.james.modules.server.WebAdminServerModule;

import com.google.inject.util.Modules;

/**
 * James' in-memory server with only what pytest-mailtls uses: SMTP, IMAP and POP3, the in-memory mailbox,
 * users, mail queue and mailet container of {@link MemoryJamesServerMain}, and WebAdmin's domain and user
 * routes (the entrypoint creates the test user through them).
 *
 * <p>{@link MemoryJamesServerMain} also wires JMAP, LMTP, ManageSieve, JMX, DKIM and a dozen WebAdmin route
 * groups, none of which a test server uses; building them took about a quarter of the JVM's start-up CPU
 * and 50 MB of resident memory. The protocol servers are the same classes, configured by the same files.
 * Without JMAP, two bindings it used to supply come from James' own defaults, as its SMTP-only variant of
 * this class does: the raw mail-queue decorator, and an empty fallback for the mailet processors (the
 * rendered mailetcontainer.xml always has them).
 */
public final class MailtlsJamesMain {
    private MailtlsJamesMain() {
    }

    public static void main(String[] args) throws Exception {
        ExtraProperties.initialize();
        MemoryJamesConfiguration configuration = MemoryJamesConfiguration.builder()
            .useWorkingDirectoryEnvProperty()
            .build();
        GuiceJamesServer server = GuiceJamesServer.forConfiguration(configuration)
            .combineWith(MemoryJamesServerMain.IN_MEMORY_SERVER_MODULE)
            .combineWith(Modules.combine(
                new IMAPServerModule(),
                new POP3ServerModule(),
                new ProtocolHandlerModule(),
                new SMTPServerModule(),
                new RawPostDequeueDecoratorModule(),
                new WebAdminServerModule(),
                new DataRoutesModules(),
                new NoJwtModule(),
                binder -> binder.bind(MailetContainerModule.DefaultProcessorsConfigurationSupplier.class)
                    .toInstance(BaseHierarchicalConfiguration::new)))
            .combineWith(new UsersRepositoryModuleChooser(new MemoryUsersRepositoryModule())
                .chooseModules(configuration.getUsersRepositoryImplementation()))
            .combineWith(new FakeSearchMailboxModule())
            .overrideWith(new RunArgumentsModule(args));
        JamesServerMain.main(server);
    }
}
