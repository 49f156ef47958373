import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import Logging
import RedisClient
import Synchronization
import Testing

/// A bash script run from a test, through python3, which clears the signal mask the test process hands its children
/// (the Swift runtime's threads block most signals, SIGCHLD among them, and bash waits for its command substitutions on
/// SIGCHLD). Output to /dev/null unless given. A script that leaves processes running must start them with
/// scripts/cluster.sh's `detached`: Foundation's `Process` sees its child exit only when every holder of a socket the
/// child inherits has exited, and `isRunning` stays true while a background process keeps it.
enum ShellScript {
    static func process(_ script: String, arguments: [String] = [], output: FileHandle = .nullDevice) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.currentDirectoryURL = PackagePaths.root
        process.arguments = ["-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, set()); os.execv('/bin/bash', ['bash'] + sys.argv[1:])",
                             "-c", script, "script"] + arguments
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        return process
    }
}

/// scripts/cluster.sh's `detached`: a process started by a script that exits at once does not keep the script's
/// `Process` running (the redis-servers of a throwaway cluster once kept its start "running" forever).
@Suite("Scripts that leave processes running")
struct DetachedProcessTests {
    @Test(.timeLimit(.minutes(1))) func aScriptThatLeavesAProcessRunningIsSeenExiting() async throws {
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-detached-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let process = try ShellScript.process("""
            source scripts/lib.sh
            source scripts/cluster.sh
            detached sleep 30
            echo $! > "$1"
            """, arguments: [pidFile])
        try process.run()
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let pid = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        if let pid { kill(pid, SIGKILL) }
        #expect(!process.isRunning, "the script exited long ago but its Process still runs: the background process kept the socket Foundation waits on")
        #expect(process.terminationStatus == 0)
        #expect(pid != nil)
    }
}

/// A 3-master, 3-replica Redis Cluster of a test's own (scripts/cluster.sh on free ports), for the tests that move
/// slots or kill masters, so the cluster the other tests share is not disturbed.
final class ThrowawayCluster: @unchecked Sendable {
    // @unchecked: used from one test task.
    let url: String
    let directory: String
    /// `127.0.0.1:<port>` of each node and its redis-server's pid, in start order.
    private(set) var nodes: [(address: String, pid: Int32)]
    let nodeTimeout: Int

    init(nodeTimeout: Int = 1000) throws {
        self.nodeTimeout = nodeTimeout
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-cluster-\(UUID().uuidString).env").path
        let process = try ShellScript.process("""
            set -euo pipefail
            source scripts/lib.sh
            source scripts/cluster.sh
            # A start that fails stops the nodes it started (the test never learns their pids).
            trap '[ $? = 0 ] || stop_test_cluster' EXIT
            start_test_cluster \(nodeTimeout)
            { echo "$JOBFARM_CLUSTER_URL"; echo "$JOBFARM_CLUSTER_DIR"; echo "${JOBFARM_CLUSTER_PIDS[*]}"; } > "$1"
            """, arguments: [out])
        try process.run()
        // Polled, not waitUntilExit (which can hang a test thread on Linux): the start takes a second or two.
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning {
            process.terminate()
            throw TestFailure("scripts/cluster.sh did not start a throwaway cluster within 30 s (a process it left running holds the socket Process waits on? start it with `detached`)")
        }
        guard process.terminationStatus == 0, let text = try? String(contentsOfFile: out, encoding: .utf8) else {
            throw TestFailure("scripts/cluster.sh could not start a throwaway cluster (exit \(process.terminationStatus))")
        }
        try? FileManager.default.removeItem(atPath: out)
        let lines = text.split(separator: "\n").map(String.init)
        url = lines[0]
        directory = lines[1]
        let addresses = url.dropFirst("redis+cluster://".count).split(separator: ",").map(String.init)
        let pids = lines[2].split(separator: " ").compactMap { Int32($0) }
        nodes = Array(zip(addresses, pids)).map { (address: $0.0, pid: $0.1) }
    }

    var configuration: RedisConfiguration { get throws { try RedisConfiguration(url: url) } }

    /// SIGKILL of one node: it dies without a word to its replica.
    func kill(_ address: String) {
        guard let node = nodes.first(where: { $0.address == address }) else { return }
        Foundation.kill(node.pid, SIGKILL)
    }

    /// Starts a killed node again with its own nodes.conf: it rejoins the cluster (as a replica of the master that
    /// took its place).
    func restart(_ address: String) throws {
        guard let index = nodes.firstIndex(where: { $0.address == address }) else { return }
        let port = String(address.split(separator: ":").last!)
        let dir = "\(directory)/\(port)"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", "\(dir)/nodes.conf",
                             "--cluster-node-timeout", String(nodeTimeout), "--save", "", "--appendonly", "no", "--dir", dir,
                             "--maxmemory", "64mb", "--hash-max-listpack-value", "1024", "--logfile", "\(dir)/redis.log"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        nodes[index].pid = process.processIdentifier
    }

    func stop() {
        for node in nodes { Foundation.kill(node.pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { stop() }
}

/// Runs a no-op job, counting each run.
private struct CountedJob: JobHandler {
    struct Parameters: Codable, Sendable {}
    static let kind = "counted"
    let counter: RunCounter
    func run(_ parameters: Parameters, context: JobContext) async throws -> JSONValue {
        counter.count(context.id)
        return .bool(true)
    }
}

/// Live resharding and failover, each on a cluster of its own.
@Suite("Redis Cluster resharding and failover", .serialized,
       .enabled(if: TestRedis.clusterURL != nil, "needs redis-server and redis-cli with cluster support (scripts/test)"),
       .enabled(if: ProcessInfo.processInfo.environment["JOBFARM_TEST_CLUSTER_OPERATIONS"] != "0",
                "JOBFARM_TEST_CLUSTER_OPERATIONS=0 turns it off"))
struct ClusterOperationsTests {
    func startWorker(_ farm: JobFarm, counter: RunCounter, queue: String, concurrency: Int = 8) -> (Worker, Task<Void, Error>) {
        var registry = HandlerRegistry()
        registry.register(CountedJob(counter: counter))
        var logger = Logger(label: "test.worker")
        logger.logLevel = .critical
        let worker = Worker(
            farm: farm, registry: registry,
            configuration: WorkerConfiguration(queues: [queue], concurrency: concurrency, shutdownGrace: .seconds(5), idleWait: .milliseconds(200)),
            logger: logger)
        return (worker, Task { try await worker.run() })
    }

    /// How many sharded subscribers `node` counts on `channel` (`PUBSUB SHARDNUMSUB`); nil when it does not answer.
    func shardedSubscribers(_ channel: String, on node: String) async -> Int? {
        guard let plain = try? RedisClient(url: "redis://\(node)") else { return nil }
        defer { plain.close() }
        return try? await plain.send([RedisCommand("PUBSUB", "SHARDNUMSUB", channel)])[0].array?[1].int
    }

    /// A waiter for a job due in an hour (the test cancels it to end the wait), through a client given another
    /// master than the queue's only, once its sharded subscription is live on the queue's master.
    func lateJobWaiter(_ farm: JobFarm, cluster: ThrowawayCluster, queue: String, avoiding owner: String)
        async throws -> (id: String, channel: String, waiting: Task<JobStatus, Error>)
    {
        let admin = RedisClient(configuration: try cluster.configuration, name: "admin")
        defer { admin.close() }
        let other = try #require(try await admin.masters().first { $0 != owner })
        var throughOther = farm.configuration
        throughOther.redis = try RedisConfiguration(url: "redis+cluster://\(other)")
        let waiter = try JobFarm(configuration: throughOther)
        // Durable: it must survive the failover to be waited for after it.
        var durable = farm.configuration
        durable.redis = try RedisConfiguration(url: cluster.url + "?durable=1")
        let id = try await JobFarm(configuration: durable).enqueue(EnqueueRequest(kind: CountedJob.kind, queue: queue, payload: .object([:]), delay: .seconds(3600)))
        let channel = QueueKeys(namespace: farm.configuration.namespace, queue: queue).events
        let waiting = Task { try await waiter.wait(for: id, timeout: .seconds(90)) }
        try await eventually(timeout: .seconds(10), "the waiter subscribed on the queue's master \(owner)") {
            await shardedSubscribers(channel, on: owner) == 1
        }
        return (id, channel, waiting)
    }

    /// Jobs enqueued and run while their queue's slot moves to another master (`moveSlot`) and back (`jobfarm cluster
    /// reshard`) all end exactly once: every job succeeded, every run counted once, nothing lost.
    @Test(.timeLimit(.minutes(2))) func jobsFlowingThroughASlotMoveAllEndExactlyOnce() async throws {
        let cluster = try ThrowawayCluster()
        defer { cluster.stop() }
        let farm = try TestRedis.farm(redis: try cluster.configuration)
        let admin = RedisClient(configuration: try cluster.configuration, name: "admin")
        defer { admin.close() }
        let queue = "reshard"
        let slot = ClusterSlot.of(queue)
        let home = try #require(try await admin.owner(ofSlot: slot))
        let away = try #require(try await admin.masters().first { $0 != home })
        let counter = RunCounter()
        let total = 20_000, batch = 100
        let acknowledged = Mutex<[String]>([])
        let (worker, workerTask) = startWorker(farm, counter: counter, queue: queue)
        let producer = Task {
            for _ in 0..<(total / batch) {
                let ids = try await farm.enqueue((0..<batch).map { _ in EnqueueRequest(kind: CountedJob.kind, queue: queue, payload: .object([:])) })
                acknowledged.withLock { $0 += ids }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        var moves: [SlotMove] = []
        // A waiter subscribed (sharded) on the queue's master follows the slot to its new owner.
        let late = try await lateJobWaiter(farm, cluster: cluster, queue: queue, avoiding: home)
        try await eventually(timeout: .seconds(30), "a third of the jobs enqueued") { acknowledged.withLock { $0.count } >= total / 3 }
        moves.append(try await admin.moveSlot(slot, to: away))
        try await eventually(timeout: .seconds(10), "the waiter's subscription moved with the slot to \(away)") {
            await shardedSubscribers(late.channel, on: away) == 1
        }
        // Its job's end (a cancel) is published on the new owner and reaches it there.
        try await eventually(timeout: .seconds(10), "the waited job cancelled") { (try? await farm.cancel(id: late.id)) != nil }
        #expect(try await late.waiting.value.state == .cancelled)
        try await eventually(timeout: .seconds(30), "two thirds of the jobs enqueued") { acknowledged.withLock { $0.count } >= 2 * total / 3 }
        // Back with the command an operator runs (README, "On a Redis Cluster").
        let command = try ChildProcess(["cluster", "reshard", "--redis-url", cluster.url, "--queue", queue, "--to", home])
        #expect(await command.waitForExit() == 0, "\(command.text)")
        #expect(command.text.contains("moved slot \(slot) (queue \(queue)) from \(away) to \(home)"), "\(command.text)")
        try await producer.value
        try await eventually(timeout: .seconds(60), "every job to end") {
            let stats = try await farm.stats(queues: [queue])[0]
            return (stats.counters["succeeded"] ?? 0) + (stats.counters["failed"] ?? 0) + (stats.counters["dead"] ?? 0) >= total && stats.inflight == 0
        }
        worker.beginShutdown()
        try await workerTask.value
        let ids = acknowledged.withLock { $0 }
        #expect(ids.count == total)
        #expect(moves.map(\.from) == [home] && moves.map(\.to) == [away])
        #expect(moves.allSatisfy { $0.keys > 0 }, "keys moved: \(moves.map(\.keys))")
        print("slot move with jobs flowing: \(moves.map { "\($0.keys) keys, old owner busy \($0.stall)" })")
        let runs = counter.byJob
        #expect(runs.count == total, "jobs that ran: \(runs.count) of \(total)")
        #expect(runs.values.allSatisfy { $0 == 1 }, "jobs run more than once: \(runs.filter { $0.value > 1 }.count)")
        let stats = try await farm.stats(queues: [queue])[0]
        #expect(stats.counters["succeeded"] == total, "\(stats.counters)")
        for id in ids.shuffled().prefix(200) { #expect(try await farm.status(id: id)?.state == .succeeded) }
        #expect(try await admin.owner(ofSlot: slot) == home)
    }

    /// A master killed (SIGKILL) while a producer enqueues and a worker runs jobs: the replica is promoted, producer
    /// and worker follow the new map by themselves, and the loss report (the producer's acknowledged ids against the
    /// states after the failover) is what PROTOCOL.md §14 says: without `durable` an acknowledged enqueue not yet
    /// replicated can be gone; with `?durable=1` none is. Jobs whose completion was lost run again (at least once).
    @Test(.timeLimit(.minutes(2)), arguments: [false, true])
    func aMasterKilledMidRunLosesOnlyWhatTheLossReportSays(durable: Bool) async throws {
        let cluster = try ThrowawayCluster()
        defer { cluster.stop() }
        // The producer enqueues with or without `durable`; the worker's own calls are not durable either way.
        let farm = try TestRedis.farm(leaseDuration: .seconds(2), heartbeat: .milliseconds(400), redis: try cluster.configuration)
        var producerConfiguration = farm.configuration
        producerConfiguration.redis = try RedisConfiguration(url: cluster.url + (durable ? "?durable=1" : ""))
        let producerFarm = try JobFarm(configuration: producerConfiguration)
        let admin = RedisClient(configuration: try cluster.configuration, name: "admin")
        defer { admin.close() }
        let queue = "failover"
        let victim = try #require(try await admin.owner(ofSlot: ClusterSlot.of(queue)))
        let counter = RunCounter()
        let (worker, workerTask) = startWorker(farm, counter: counter, queue: queue, concurrency: 4)
        let acknowledgedBeforeKill = 1000
        let report = Mutex<(acknowledged: [String], refused: [String])>(([], []))
        let killed = Mutex<ContinuousClock.Instant?>(nil)
        let producer = Task {
            // One job per call, each with an id of its own: acknowledged (the call returned) or refused (it threw).
            while true {
                let since = killed.withLock { $0 }
                if let since, ContinuousClock.now - since > .seconds(4), report.withLock({ $0.acknowledged.count }) > 1500 { return }
                if let since, ContinuousClock.now - since > .seconds(40) { return }
                let id = JobID.make()
                do {
                    _ = try await producerFarm.enqueue(EnqueueRequest(kind: CountedJob.kind, queue: queue, payload: .object([:]), id: id))
                    report.withLock { $0.acknowledged.append(id) }
                } catch {
                    report.withLock { $0.refused.append(id) }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
        }
        // A waiter subscribed (sharded) on the victim, for a job that runs after the failover: its subscription must
        // follow the slot to the promoted replica.
        let late = try await lateJobWaiter(farm, cluster: cluster, queue: queue, avoiding: victim)
        try await eventually(timeout: .seconds(30), "\(acknowledgedBeforeKill) jobs enqueued") { report.withLock { $0.acknowledged.count } >= acknowledgedBeforeKill }
        cluster.kill(victim)
        killed.withLock { $0 = .now }
        // The replica takes over within a few node timeouts; the producer carries on against the new master.
        try await eventually(timeout: .seconds(30), "the queue's slot served by another master") {
            let fresh = RedisClient(configuration: try cluster.configuration, name: "probe")
            defer { fresh.close() }
            guard let owner = try? await fresh.owner(ofSlot: ClusterSlot.of(queue)) else { return false }
            return owner != victim
        }
        let probe = RedisClient(configuration: try cluster.configuration, name: "probe")
        defer { probe.close() }
        let promoted = try #require(try await probe.owner(ofSlot: ClusterSlot.of(queue)))
        try await eventually(timeout: .seconds(15), "the waiter's subscription on the promoted master \(promoted)") {
            await shardedSubscribers(late.channel, on: promoted) == 1
        }
        try await eventually(timeout: .seconds(10), "the waited job cancelled") { (try? await farm.cancel(id: late.id)) != nil }
        #expect(try await late.waiting.value.state == .cancelled)
        if durable {
            // The promoted master has no replica left: a durable enqueue is refused until the old master is back as
            // its replica.
            try cluster.restart(victim)
        }
        try await producer.value
        let (acknowledged, refused) = report.withLock { $0 }
        // Every job still there ends; a job whose completion was lost with the old master runs again.
        try await eventually(timeout: .seconds(60), "every remaining job to end") {
            let stats = try await farm.stats(queues: [queue])[0]
            return stats.inflight == 0 && stats.tiers.allSatisfy { $0.depth == 0 } && stats.scheduled == 0
        }
        worker.beginShutdown()
        try await workerTask.value
        var lost: [String] = []
        for id in acknowledged where try await farm.status(id: id) == nil { lost.append(id) }
        let refusedButThere = try await refused.asyncFilter { try await farm.status(id: $0) != nil }
        let runs = counter.byJob
        let ranTwice = runs.values.filter { $0 > 1 }.count
        print("failover loss report (durable: \(durable)): \(acknowledged.count) acknowledged, \(lost.count) of them lost; \(refused.count) refused, \(refusedButThere.count) of them there after all; \(ranTwice) jobs ran twice")
        if durable { #expect(lost.isEmpty, "durable enqueues lost: \(lost)") }
        #expect(lost.count <= 200, "an acknowledged enqueue can be lost only within the replication lag before the kill: \(lost.count)")
        for id in acknowledged where !lost.contains(id) {
            #expect(runs[id, default: 0] >= 1, "\(id) was acknowledged, is there, and never ran")
        }
        // The producer carried on through the failover (its client follows the new map; a refused enqueue is one the
        // client gave up on after its retries, none with a prompt promotion).
        #expect(acknowledged.count > acknowledgedBeforeKill + 100, "enqueues acknowledged after the kill: \(acknowledged.count - acknowledgedBeforeKill)")
    }
}

extension Array {
    fileprivate func asyncFilter(_ keep: (Element) async throws -> Bool) async rethrows -> [Element] {
        var kept: [Element] = []
        for element in self where try await keep(element) { kept.append(element) }
        return kept
    }
}
