import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// The protocol's scripts are the `.lua` files in Sources/JobProtocol/Scripts: what the binary runs is exactly their
/// text, and a client in another language can run them with plain EVAL.
@Suite("Lua script files")
struct ScriptFileTests {
    static let directory = PackagePaths.root.appendingPathComponent("Sources/JobProtocol/Scripts")

    static func file(_ name: String) throws -> String {
        try String(contentsOf: directory.appendingPathComponent("\(name).lua"), encoding: .utf8)
    }

    @Test func theBinaryRunsTheFilesText() throws {
        let prelude = try Self.file("prelude")
        #expect(QueueScripts.prelude == prelude)
        for script in QueueScripts.all {
            #expect(script.source == prelude + (try Self.file(script.name)), "\(script.name).lua differs from what the binary embeds")
        }
        let helpers = try Self.file("runs")
        for script in RunScripts.all {
            #expect(script.source == prelude + helpers + (try Self.file(script.name)), "\(script.name).lua differs from what the binary embeds")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter { $0.hasSuffix(".lua") }
        let used = (QueueScripts.all + RunScripts.all).map { "\($0.name).lua" } + ["prelude.lua", "runs.lua"]
        #expect(Set(files) == Set(used), "a .lua file no script uses, or a script without its file")
    }

    /// docs/PROTOCOL.md §10, "Cancel from another language": EVAL of prelude.lua + cancel.lua.
    @Test(.enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
    func aForeignClientCancelsWithPlainEval() async throws {
        let farm = try TestRedis.farm()
        let id = try await farm.enqueue(EnqueueRequest(kind: "echo", payload: .object(["x": .number(1)])))
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        let prefix = QueueKeys(namespace: farm.configuration.namespace, queue: "default").prefix
        let source = try Self.file("prelude") + Self.file("cancel")
        // EVAL <prelude + cancel> 1 <prefix> <queue> <id> <retention ms> <keep as dead letter 1/0>
        let reply = try await client.execute("EVAL", source, "1", prefix, "default", id, "86400000", "0")
        #expect(reply.string == "cancelled")
        #expect(try await farm.status(id: id)?.state == .cancelled)
        #expect(try await client.execute("LLEN", prefix + "t:standard").int == 0)
        // The same text by SHA, as a client that loads the scripts once would: a second cancel is refused as final.
        let sha = try #require(try await client.execute("SCRIPT", "LOAD", source).string)
        #expect(try await client.execute("EVALSHA", sha, "1", prefix, "default", id, "86400000", "0").string == "final:cancelled")
    }
}

@Suite("Protocol doc recipes", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct ProtocolRecipeTests {
    /// docs/PROTOCOL.md §10: the `sh foreign-cancel` block, run as written (from the repository's root).
    @Test func theCancelRecipeOfTheProtocolDocWorks() async throws {
        let doc = try String(contentsOf: PackagePaths.root.appendingPathComponent("docs/PROTOCOL.md"), encoding: .utf8)
        let recipe = try #require(codeBlock(doc, info: "sh foreign-cancel"), "docs/PROTOCOL.md has no ```sh foreign-cancel block")
        let farm = try TestRedis.farm()
        _ = try await farm.enqueue(EnqueueRequest(kind: "echo", id: "ext-0003"))
        let port = try #require(TestRedis.url?.split(separator: ":").last.map(String.init))
        let script = "cd '\(PackagePaths.root.path)'\n" + recipe.replacingOccurrences(of: "jf:", with: "\(farm.configuration.namespace):")
            .replacingOccurrences(of: "redis-cli ", with: "redis-cli -p \(port) ")
        #expect(try shell(script).trimmingCharacters(in: .whitespacesAndNewlines) == "cancelled")
        #expect(try await farm.status(id: "ext-0003")?.state == .cancelled)
    }

    /// docs/PROTOCOL.md §10: the `sh foreign-pending` block (a job without a key of its own, §3a), run as written.
    @Test func thePendingEnqueueRecipeOfTheProtocolDocWorks() async throws {
        let doc = try String(contentsOf: PackagePaths.root.appendingPathComponent("docs/PROTOCOL.md"), encoding: .utf8)
        let recipe = try #require(codeBlock(doc, info: "sh foreign-pending"), "docs/PROTOCOL.md has no ```sh foreign-pending block")
        let farm = try TestRedis.farm()
        let port = try #require(TestRedis.url?.split(separator: ":").last.map(String.init))
        let script = recipe.replacingOccurrences(of: "jf:", with: "\(farm.configuration.namespace):")
            .replacingOccurrences(of: "redis-cli ", with: "redis-cli -p \(port) ")
        _ = try shell(script)
        _ = try await farm.enqueue(EnqueueRequest(kind: "echo", id: "ext-0005"))  // registers the queue for status without a queue
        let status = try #require(try await farm.status(id: "ext-0004"))
        #expect(status.state == .queued)
        #expect(status.kind == "echo")
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        let jobs = try await farm.fetch(queue: "default", count: 10, worker: "w", on: client)
        #expect(jobs.map(\.id) == ["ext-0004", "ext-0005"])
    }
}
