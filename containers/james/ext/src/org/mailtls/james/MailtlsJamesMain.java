package org.mailtls.james;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.security.Provider;
import java.security.Security;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.apache.commons.configuration2.BaseHierarchicalConfiguration;
import org.apache.james.ExtraProperties;
import org.apache.james.FakeSearchMailboxModule;
import org.apache.james.GuiceJamesServer;
import org.apache.james.JamesServerMain;
import org.apache.james.MemoryJamesConfiguration;
import org.apache.james.data.UsersRepositoryModuleChooser;
import org.apache.james.modules.BlobExportMechanismModule;
import org.apache.james.modules.BlobMemoryModule;
import org.apache.james.modules.MailboxModule;
import org.apache.james.modules.MailetProcessingModule;
import org.apache.james.modules.RunArgumentsModule;
import org.apache.james.modules.data.MemoryDataModule;
import org.apache.james.modules.data.MemoryDelegationStoreModule;
import org.apache.james.modules.data.MemoryUsersRepositoryModule;
import org.apache.james.modules.eventstore.MemoryEventStoreModule;
import org.apache.james.modules.mailbox.MemoryMailboxModule;
import org.apache.james.modules.protocols.IMAPServerModule;
import org.apache.james.modules.protocols.POP3ServerModule;
import org.apache.james.modules.protocols.ProtocolHandlerModule;
import org.apache.james.modules.protocols.SMTPServerModule;
import org.apache.james.modules.queue.memory.MemoryMailQueueModule;
import org.apache.james.modules.server.MailetContainerModule;
import org.apache.james.modules.server.RawPostDequeueDecoratorModule;
import org.apache.james.modules.server.TaskManagerModule;
import org.apache.james.modules.vault.DeletedMessageVaultModule;
import org.apache.james.utils.DataProbeImpl;

import com.google.inject.util.Modules;

/**
 * James' in-memory server with only what pytest-mailtls uses, then the test users.
 *
 * <p>The server: SMTP, IMAP and POP3 on the in-memory mailbox, users, mail queue and mailet container of
 * {@code MemoryJamesServerMain} (its IN_MEMORY_SERVER_MODULE, listed here because touching that class builds
 * every module it holds). {@code MemoryJamesServerMain} also wires JMAP, LMTP, ManageSieve, JMX, DKIM and
 * WebAdmin, none of which a test server uses; building them took about a quarter of the JVM's start-up CPU
 * and 40 MB of resident memory. The protocol servers are the same classes, configured by the same files.
 * Without JMAP, two bindings it used to supply come from James' own defaults, as its SMTP-only variant of
 * this class does: the raw mail-queue decorator, and an empty fallback for the mailet processors (the
 * rendered mailetcontainer.xml always has them).
 *
 * <p>The users: once James is up, the domain {@code MAILTLS_DOMAIN} (unless it is already there) and one user
 * per file of {@code /mailtls/users} (the file's name is the user name, its content the password, UTF-8),
 * through the same repositories WebAdmin's routes call. Prints {@code MAILTLS: provisioned N users}, or
 * {@code MAILTLS: FAILED ...} and stops the JVM, and writes the same words (without the prefix) to
 * {@code /mailtls/status}, which the host sees without reading the container's log.
 *
 * <p>RSA signatures: with {@code -Dmailtls.rsa.provider=FILE} (a SunPKCS11 configuration, {@code nss-rsa.cfg}
 * in the image), NSS's native RSA signs the handshakes (RSA-PSS and PKCS#1 v1.5 with SHA-2) instead of
 * SunRsaSign's BigInteger code, which C1 (the only compiler James runs with) compiles without the C2
 * intrinsics: about 9 ms per 2048-bit signature against well under 1 ms. The provider offers nothing else
 * (its {@code enabledMechanisms}), so ciphers, key exchange, digests and SHA-1 or raw RSA stay with the JDK's
 * providers, and a key NSS refuses at {@code initSign} falls through to SunRsaSign (JCA's delayed provider
 * selection). When NSS cannot be loaded James starts all the same, with the JDK's RSA.
 */
public final class MailtlsJamesMain {
    private static final Path USERS = Paths.get("/mailtls/users");
    private static final Path STATUS = Paths.get("/mailtls/status");

    private MailtlsJamesMain() {
    }

    public static void main(String[] args) throws Exception {
        nativeRsa(System.getProperty("mailtls.rsa.provider", ""));
        ExtraProperties.initialize();
        MemoryJamesConfiguration configuration = MemoryJamesConfiguration.builder()
            .useWorkingDirectoryEnvProperty()
            .build();
        GuiceJamesServer server = GuiceJamesServer.forConfiguration(configuration)
            .combineWith(Modules.combine(
                new MailetProcessingModule(),
                new MemoryDelegationStoreModule(),
                new BlobMemoryModule(),
                new DeletedMessageVaultModule(),
                new BlobExportMechanismModule(),
                new MailboxModule(),
                new MemoryDataModule(),
                new MemoryEventStoreModule(),
                new MemoryMailboxModule(),
                new MemoryMailQueueModule(),
                new TaskManagerModule()))
            .combineWith(Modules.combine(
                new IMAPServerModule(),
                new POP3ServerModule(),
                new ProtocolHandlerModule(),
                new SMTPServerModule(),
                new RawPostDequeueDecoratorModule(),
                binder -> binder.bind(MailetContainerModule.DefaultProcessorsConfigurationSupplier.class)
                    .toInstance(BaseHierarchicalConfiguration::new)))
            .combineWith(new UsersRepositoryModuleChooser(new MemoryUsersRepositoryModule())
                .chooseModules(configuration.getUsersRepositoryImplementation()))
            .combineWith(new FakeSearchMailboxModule())
            .overrideWith(new RunArgumentsModule(args));
        JamesServerMain.main(server);
        provision(server.getProbe(DataProbeImpl.class));
    }

    private static void nativeRsa(String config) {
        if (config.isEmpty()) {
            return;
        }
        try {
            Provider provider = Security.getProvider("SunPKCS11").configure(config);
            Security.insertProviderAt(provider, 1);
            System.out.println("MAILTLS: RSA signatures by " + provider.getName());
        } catch (Exception | LinkageError e) {
            System.out.println("MAILTLS: RSA signatures by the JDK (" + config + ": " + e + ")");
        }
    }

    private static void provision(DataProbeImpl data) {
        String domain = System.getenv().getOrDefault("MAILTLS_DOMAIN", "mailtls.test");
        String step = "creating domain " + domain;
        try {
            if (!data.containsDomain(domain)) {
                data.addDomain(domain);
            }
            List<Path> files;
            try (Stream<Path> listing = Files.list(USERS)) {
                files = listing.filter(Files::isRegularFile).sorted().collect(Collectors.toList());
            }
            for (Path file : files) {
                String user = file.getFileName().toString();
                step = "creating user " + user;
                data.addUser(user, new String(Files.readAllBytes(file), StandardCharsets.UTF_8));
            }
            report("provisioned " + files.size() + " users");
        } catch (Exception e) {
            report("FAILED " + step + ": " + e);
            System.exit(1);
        }
    }

    private static void report(String status) {
        System.out.println("MAILTLS: " + status);
        try {
            Path partial = STATUS.resolveSibling(STATUS.getFileName() + ".partial");
            Files.write(partial, (status + "\n").getBytes(StandardCharsets.UTF_8));
            Files.move(partial, STATUS, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (Exception e) {
            System.out.println("MAILTLS: cannot write " + STATUS + ": " + e);  // the log line above still says it
        }
    }
}
