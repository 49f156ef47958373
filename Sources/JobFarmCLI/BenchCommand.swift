import ArgumentParser
import Foundation
import Histogram
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import Logging
import RedisClient
import Synchronization

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks: each figure beside the ceiling measured in the same run.",
        subcommands: [BenchQueueCommand.self, BenchBLASCommand.self, BenchCodecCommand.self, BenchAPICommand.self])
}

/// `jobfarm bench queue`: end-to-end throughput, bulk enqueue, pickup latency and memory, beside raw Redis.
struct BenchQueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "No-op jobs end to end with 1 and 2 worker processes, bulk enqueue, idle pickup latency, memory per job.",
        discussion: "Uses a namespace of its own (deleted afterwards). Build in release first: swift build -c release.")

    @OptionGroup var global: GlobalOptions
    @Option(parsing: .unconditional, help: "Jobs per throughput run.") var jobs: Int = 200_000
    @Option(help: "Worker process counts to run, comma-separated.") var workers: String = "1,2"
    @Option(parsing: .unconditional, help: "Concurrency of each worker process.") var concurrency: Int = 256
    @Option(parsing: .unconditional, help: "Jobs leased per fetch.") var fetchBatch: Int = 256
    @Option(parsing: .unconditional, help: "Pickup latency samples.") var samples: Int = 2000
    @Option(parsing: .unconditional, help: "Jobs per bulk enqueue call.") var bulk: Int = 10_000
    @Option(parsing: .unconditional, help: "Steps of the pipeline chain whose step start latency is measured (0: skip).") var chain: Int = 1000
    @Option(parsing: .unconditional, help: "Items of the for_each fan-out (and jobs of the batch) whose fan-in is measured (0: skip).") var fanOut: Int = 10_000
    @Option(help: "Worker settings for the end-to-end runs, comma-separated: 'bench' (--concurrency/--fetch-batch above), 'defaults' (the worker's own defaults, what a user gets).")
    var settings: String = "bench,defaults"
    @Option(help: "Queue counts of the end-to-end runs, comma-separated: N queues whose hash slots land on distinct masters of a Redis Cluster (on the masters in turn when N exceeds them), the jobs split evenly, every worker serving all N.")
    var queues: String = "1"

    func validate() throws {
        try OptionCheck.integer(jobs, "--jobs", atLeast: 1)
        _ = try OptionCheck.integers(workers, "--workers", atLeast: 1)
        _ = try OptionCheck.integers(queues, "--queues", atLeast: 1)
        try OptionCheck.integer(concurrency, "--concurrency", atLeast: 1)
        try OptionCheck.integer(fetchBatch, "--fetch-batch", atLeast: 1)
        try OptionCheck.integer(samples, "--samples", atLeast: 1)
        try OptionCheck.integer(bulk, "--bulk", atLeast: 1)
        for item in settingList where !["bench", "defaults"].contains(item) {
            throw ValidationError("--settings: '\(item)' is neither 'bench' nor 'defaults'")
        }
    }

    private var settingList: [String] { settings.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func run() async throws {
        let base = try global.farmConfiguration()
        var configuration = base
        configuration.namespace = "jfbench-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        global.bootstrapLogging()
        let farm = try JobFarm(configuration: configuration, connections: 1)
        let raw = RedisClient(configuration: configuration.redis, name: "bench-raw")
        do {
            _ = try await raw.execute("PING")
        } catch let error as RedisError {
            throw CLIError(error)
        }
        defer { raw.close() }
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        print("jobfarm bench queue — \(isoTime(WallClock.nowMilliseconds())), Redis \(configuration.redis), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        #if DEBUG
        print("WARNING: debug build; figures are meaningful only from `swift build -c release`")
        #endif
        do {
            // 1. Raw ceilings, measured now, on this machine, on one connection.
            let lpush = try await rawRate(raw, total: jobs) { _ in .command(RedisCommand("LPUSH", "\(configuration.namespace):raw", "x")) }
            let script = RedisScript(name: "one", source: "return 1")
            _ = try await raw.run(script, keys: [], arguments: [])
            let evalsha = try await rawRate(raw, total: jobs) { _ in .script(script, keys: [], arguments: []) }
            _ = try await raw.execute("DEL", "\(configuration.namespace):raw")
            let ping = try await pingLatency(raw, samples: samples)
            let wake = try await rawWakeLatency(configuration: configuration, samples: samples)
            // What an enqueue costs in the design before pending jobs (a job hash created per job), and what the
            // enqueue script writes now (docs/PROTOCOL.md §3a): one field per job in one hash, one LPUSH of the ids.
            let filler = String(repeating: "x", count: JobEnvelope(kind: "noop", queue: "bench").encoded().utf8.count)
            let hset = try await rawRate(raw, total: jobs) { index in
                // A fresh key every time: creating the hash is the cost being measured.
                .command(RedisCommand("HSET", "\(configuration.namespace):rawjob:\(index)", "env", filler, "state", "queued", "tier", "standard", "qt", "1764000000000"))
            }
            let pendingRate = try await rawFieldsRate(raw, total: jobs, namespace: configuration.namespace, value: "1764000000000 standard " + filler)
            let listpack = try await raw.send([RedisCommand("CONFIG", "GET", "hash-max-listpack-value")])[0].array?.last?.string ?? "?"
            print("\nceilings (raw Redis, 1 connection, pipelines of 1000)")
            print(row("LPUSH", rate(lpush), ""))
            print(row("HSET of a new job-sized hash", rate(hset), "(hash-max-listpack-value \(listpack)): a key per job, the design before pending jobs"))
            print(row("HSET of 1,000 job-sized fields + LPUSH", rate(pendingRate), "(one command each per 1,000 jobs: what the enqueue script writes, without Lua)"))
            print(row("EVALSHA of `return 1`", rate(evalsha), ""))
            print(row("PING round trip p50 / p99", "\(micro(ping.p50)) / \(micro(ping.p99))", "(back to back)"))
            print(row("LPUSH → BLPOP wake-up p50 / p99", "\(micro(wake.p50)) / \(micro(wake.p99))",
                      "(a client blocked in BLPOP woken by another's LPUSH, 2 ms idle between samples, as in the pickup run)"))

            // 2. Bulk enqueue and memory per queued job.
            //    Into the first end-to-end run's queues, which that run drains.
            let queueCounts = queues.split(separator: ",").compactMap { Int($0) }
            var queued = try await raw.queuesSpreadOverMasters(queueCounts[0], prefix: "bench")
            let memoryBefore = try await usedMemory(raw)
            let cpuBefore = try await redisCPUSeconds(raw).masters
            let ownCPUBefore = processCPUSeconds(getpid()) ?? 0
            let enqueueTime = try await enqueueAll(farm, count: jobs, queues: queued)
            let ownCPU = (processCPUSeconds(getpid()) ?? 0) - ownCPUBefore
            let enqueueCPU = try await redisCPUSeconds(raw).masters - cpuBefore
            let memoryAfter = try await usedMemory(raw)
            let enqueueRate = Double(jobs) / enqueueTime.seconds
            print("\nbulk enqueue (\(jobs) no-op jobs, \(bulk) per call, 1 connection\(queued.count == 1 ? "" : ", split over \(queued.count) queues"))")
            print(row("enqueue", rate(enqueueRate), ratio(enqueueRate, pendingRate, "of raw HSET fields + LPUSH") + ", " + ratio(enqueueRate, hset, "of raw HSET of a new hash")
                      + "; " + perThousand(redis: enqueueCPU, jobs: jobs)
                      + String(format: ", the enqueuing process's CPU %.1f ms", ownCPU / Double(jobs) * 1_000_000)))
            print(row("Redis memory per queued job", "\(Int((Double(memoryAfter - memoryBefore) / Double(jobs)).rounded())) bytes", ""))

            // 3. End to end: every job leased, state recorded, acknowledged; with the bench's settings and with the
            //    worker's own defaults (no flags: whatever `jobfarm worker` does when a user starts it).
            //    With --queues N: N queues spread over the masters of a cluster, every worker serving all of them.
            for queueCount in queueCounts {
                let names = try await raw.queuesSpreadOverMasters(queueCount, prefix: "bench")
                var owners: [String] = []
                for name in names { owners.append(try await raw.owner(ofSlot: ClusterSlot.of(name)) ?? "?") }
                let onMasters = Set(owners).count
                let spread = queueCount == 1 && queues == "1" ? ""
                    : "; \(queueCount) queue\(queueCount == 1 ? "" : "s") on \(onMasters) master\(onMasters == 1 ? "" : "s"): " + zip(names, owners).map { "\($0) on \($1)" }.joined(separator: ", ")
                for setting in settingList {
                    let flags = setting == "bench" ? ["--concurrency", String(concurrency), "--fetch-batch", String(fetchBatch)] : []
                    print("\nend to end (\(jobs) no-op jobs; workers: \(setting == "bench" ? flags.joined(separator: " ") : "the worker's defaults, no flags")\(spread))")
                    for count in workers.split(separator: ",").compactMap({ Int($0) }) {
                        if queued != names { _ = try await enqueueAll(farm, count: jobs, queues: names) }
                        queued = []
                        let cpuBefore = try await redisCPUSeconds(raw)
                        let run = try await drain(farm, binary: binary, processes: count, flags: flags, queues: names, configuration: configuration)
                        let cpuAfter = try await redisCPUSeconds(raw)
                        let throughput = Double(jobs) / run.time.seconds
                        var cost = perThousand(redis: cpuAfter.masters - cpuBefore.masters, workers: run.workerCPU, jobs: jobs)
                        if configuration.redis.isCluster {
                            cost = "masters' " + cost + String(format: ", replicas' CPU %.1f ms", (cpuAfter.replicas - cpuBefore.replicas) / Double(jobs) * 1_000_000)
                        }
                        print(row("\(count) worker process\(count == 1 ? "" : "es")", rate(throughput), ratio(throughput, evalsha, "of raw EVALSHA") + "; " + cost))
                    }
                }
            }

            // 4. Idle pickup latency: enqueue → handler start, one job at a time, the worker idle in BLPOP.
            let pickup = try await pickupLatency(farm, samples: samples)
            print("\nidle pickup latency (enqueue call → handler start, \(samples) samples, worker in this process)")
            print(row("p50", micro(pickup.p50), ratio(pickup.p50.seconds, ping.p50.seconds, "PING round trips", inverse: true)
                      + ", " + ratio(pickup.p50.seconds, wake.p50.seconds, "raw wake-ups", inverse: true)))
            print(row("p99", micro(pickup.p99), ratio(pickup.p99.seconds, ping.p99.seconds, "PING round trips", inverse: true)
                      + ", " + ratio(pickup.p99.seconds, wake.p99.seconds, "raw wake-ups", inverse: true)))

            // 5. Pipeline step start: a chain of noop steps, a parent's handler returning → its child's handler starting.
            if chain > 1 {
                let steps = try await BenchPipeline.chain(farm, steps: chain)
                print("\npipeline step start (a chain of \(chain) steps, parent's handler returns → child's handler starts, worker in this process; \(String(format: "%.1f", steps.total.seconds)) s in all)")
                print(row("p50", micro(steps.p50), ratio(steps.p50.seconds, pickup.p50.seconds, "idle pickup latencies", inverse: true)))
                print(row("p99", micro(steps.p99), ratio(steps.p99.seconds, pickup.p99.seconds, "idle pickup latencies", inverse: true)))
            }
            // 6. Fan-out: a for_each step over `fanOut` items between two steps, and a batch of as many jobs.
            if fanOut > 0 {
                let fan = try await BenchPipeline.fanOut(farm, items: fanOut)
                print("\nfan-out of \(fanOut) (root → for_each step → child, 8 slots, worker in this process; \(String(format: "%.1f", fan.total.seconds)) s in all)")
                print(row("root ends → first item starts", micro(fan.firstItem), ratio(fan.firstItem.seconds, pickup.p50.seconds, "idle pickup p50", inverse: true)))
                print(row("root ends → last item starts", micro(fan.allItemsStarted), ""))
                print(row("last item ends → child starts", micro(fan.fanIn), ratio(fan.fanIn.seconds, pickup.p50.seconds, "idle pickup p50", inverse: true)))
                print("batch of \(fanOut) jobs with a completion callback (\(String(format: "%.1f", fan.batchTotal.seconds)) s in all)")
                print(row("last job ends → callback starts", micro(fan.batchCallback), ratio(fan.batchCallback.seconds, pickup.p50.seconds, "idle pickup p50", inverse: true)))
            }
        } catch {
            await cleanUp(raw, namespace: configuration.namespace)
            throw CLIError(message: "benchmark failed: \(error)")
        }
        await cleanUp(raw, namespace: configuration.namespace)
    }

    // MARK: - Measurements

    /// Requests per second of pipelines of 1000 requests (`request(i)` makes the i-th) until `total` have gone.
    private func rawRate(_ client: RedisClient, total: Int, _ request: (Int) -> RedisRequest) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        var done = 0
        while done < total {
            let batch = (done..<done + 1000).map(request)
            _ = try await client.pipeline(batch)
            done += batch.count
        }
        return Double(done) / (clock.now - start).seconds
    }

    /// Jobs per second of the enqueue script's writes done with plain commands: per 1,000 jobs one `HSET` of 1,000
    /// fields (fresh ids) into one hash and one `LPUSH` of the ids, on one connection, three batches in flight.
    private func rawFieldsRate(_ client: RedisClient, total: Int, namespace: String, value: String) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        var done = 0
        while done < total {
            var batch: [RedisRequest] = []
            for _ in 0..<3 where done < total {
                var hset = RedisCommand("HSET", "\(namespace):rawpending")
                var lpush = RedisCommand("LPUSH", "\(namespace):rawlist")
                for index in done..<done + 1000 {
                    let id = "rawjob-\(index)"
                    hset.append(id)
                    hset.append(value)
                    lpush.append(id)
                }
                batch += [.command(hset), .command(lpush)]
                done += 1000
            }
            _ = try await client.pipeline(batch)
        }
        let elapsed = (clock.now - start).seconds
        _ = try await client.send([RedisCommand("DEL", "\(namespace):rawpending"), RedisCommand("DEL", "\(namespace):rawlist")])  // two slots on a cluster
        return Double(done) / elapsed
    }

    private func pingLatency(_ client: RedisClient, samples: Int) async throws -> (p50: Duration, p99: Duration) {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        let clock = ContinuousClock()
        for _ in 0..<samples {
            let start = clock.now
            _ = try await client.execute("PING")
            _ = histogram.record(UInt64((clock.now - start).nanoseconds))
        }
        return (.nanoseconds(Int64(histogram.valueAtPercentile(50))), .nanoseconds(Int64(histogram.valueAtPercentile(99))))
    }

    /// The floor under pickup latency: a client blocked in `BLPOP` (on its own connection, as a worker's fetch is)
    /// woken by another client's `LPUSH`, from the push call to the blocked call's return in the awaiting task,
    /// with the same 2 ms idle gap as the pickup run (threads asleep, as a waiting worker's are).
    private func rawWakeLatency(configuration: JobFarmConfiguration, samples: Int) async throws -> (p50: Duration, p99: Duration) {
        let waiter = RedisClient(configuration: configuration.redis, name: "bench-wait")
        let pusher = RedisClient(configuration: configuration.redis, name: "bench-push")
        defer {
            waiter.close()
            pusher.close()
        }
        let key = "\(configuration.namespace):wake"
        _ = try await waiter.execute("PING")
        _ = try await pusher.execute("PING")
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        let clock = ContinuousClock()
        for index in 0..<(samples + 20) {
            let blocked = Task { try await waiter.execute(RedisCommand("BLPOP", key, "5"), blockingFor: .seconds(5)) }
            try await Task.sleep(for: .milliseconds(2))
            let start = clock.now
            _ = try await pusher.execute(RedisCommand("LPUSH", key, "1"))
            _ = try await blocked.value
            if index >= 20 { _ = histogram.record(UInt64((clock.now - start).nanoseconds)) }  // the first 20 warm up
        }
        return (.nanoseconds(Int64(histogram.valueAtPercentile(50))), .nanoseconds(Int64(histogram.valueAtPercentile(99))))
    }

    /// `used_memory` of the one server, or summed over every master of a cluster.
    private func usedMemory(_ client: RedisClient) async throws -> Int {
        var total = 0
        for (_, reply) in try await client.everyMaster(RedisCommand("INFO", "memory")) {
            for line in (reply.string ?? "").split(separator: "\r\n") where line.hasPrefix("used_memory:") {
                total += Int(line.dropFirst("used_memory:".count)) ?? 0
            }
        }
        return total
    }

    /// Enqueues `count` no-op jobs, split evenly over `queues`, `--bulk` per call.
    private func enqueueAll(_ farm: JobFarm, count: Int, queues: [String] = ["bench"]) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        for (index, queue) in queues.enumerated() {
            let request = EnqueueRequest(kind: "noop", queue: queue)
            let share = count / queues.count + (index < count % queues.count ? 1 : 0)
            var done = 0
            while done < share {
                let n = min(bulk, share - done)
                _ = try await farm.enqueue(Array(repeating: request, count: n))
                done += n
            }
        }
        return clock.now - start
    }

    /// Redis's own CPU time (user + system, `INFO cpu`), in seconds: summed over every master on a Redis Cluster,
    /// and apart over every replica (0 on one server).
    private func redisCPUSeconds(_ client: RedisClient) async throws -> (masters: Double, replicas: Double) {
        func sum(_ replies: [(node: String, reply: RESPValue)]) throws -> Double {
            var total = 0.0
            for (node, reply) in replies {
                guard let info = reply.string else { throw CLIError(RedisError.unexpectedReply("INFO cpu on \(node): \(reply)")) }
                for line in info.split(separator: "\r\n") where line.hasPrefix("used_cpu_sys:") || line.hasPrefix("used_cpu_user:") {
                    total += Double(line.split(separator: ":").last ?? "") ?? 0
                }
            }
            return total
        }
        return (try sum(try await client.everyMaster(RedisCommand("INFO", "cpu"))), try sum(try await client.everyReplica(RedisCommand("INFO", "cpu"))))
    }

    /// "Redis CPU 0.123 ms/1,000 jobs" (and the workers' when known): what a Redis Cluster divides, and the cost
    /// LIMITS.md compares peers by.
    private func perThousand(redis: Double, workers: Double? = nil, jobs: Int) -> String {
        var text = String(format: "Redis CPU %.1f ms per 1,000 jobs", redis / Double(jobs) * 1_000_000)
        if let workers { text += String(format: ", workers' CPU %.1f ms", workers / Double(jobs) * 1_000_000) }
        return text
    }

    /// Starts `processes` workers on the bench queue and waits until they have run `jobs` jobs; returns the time from
    /// starting them to the last job done, and the CPU seconds the workers used (user + system, read from their
    /// /proc entries just before they exit).
    private func drain(_ farm: JobFarm, binary: String, processes: Int, flags: [String], queues: [String], configuration: JobFarmConfiguration) async throws -> (time: Duration, workerCPU: Double) {
        func succeededCount() async throws -> Int { try await farm.stats(queues: queues).reduce(0) { $0 + ($1.counters["succeeded"] ?? 0) } }
        let before = try await succeededCount()
        let target = before + jobs
        let clock = ContinuousClock()
        let start = clock.now
        var children: [Process] = []
        for _ in 0..<processes {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "worker", "--redis-url", global.resolvedRedisURL, "--namespace", configuration.namespace, "--queues", queues.joined(separator: ","),
                "--exit-when-empty", "--log-level", "error",
            ] + flags
            // No-op jobs never call OpenBLAS: keep a first-ever kernel measurement (~1 s) and the small-batch
            // kernel calibration (~0.3 s of a core) out of the timed drain.
            var environment = ProcessInfo.processInfo.environment
            environment["JOBFARM_BLAS_AUTOTUNE"] = "0"
            environment["JOBFARM_KERNEL_CALIBRATION"] = "0"
            process.environment = environment
            try process.run()
            children.append(process)
        }
        var succeeded = before
        var cpu: [Int32: Double] = [:]
        while succeeded < target {
            try await Task.sleep(for: .milliseconds(10))
            succeeded = try await succeededCount()
            for child in children where child.isRunning { cpu[child.processIdentifier] = processCPUSeconds(child.processIdentifier) ?? cpu[child.processIdentifier] }
            if children.allSatisfy({ !$0.isRunning }) && succeeded < target {
                throw CLIError(message: "workers exited with \(target - succeeded) jobs not done; run one by hand to see why")
            }
        }
        let elapsed = clock.now - start
        for child in children where child.isRunning { cpu[child.processIdentifier] = processCPUSeconds(child.processIdentifier) ?? cpu[child.processIdentifier] }
        for child in children { child.waitUntilExit() }
        return (elapsed, cpu.values.reduce(0, +))
    }

    /// User + system CPU seconds of a running process (/proc/PID/stat fields 14 and 15, in clock ticks).
    private func processCPUSeconds(_ pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    private func pickupLatency(_ farm: JobFarm, samples: Int) async throws -> (p50: Duration, p99: Duration) {
        let probe = PickupProbe()
        let (worker, task) = startBenchWorker(farm, handler: PickupProbeJob(probe: probe), label: "bench.worker",
                                              configuration: WorkerConfiguration(queues: ["pickup"], concurrency: 1, fetchBatch: 1))
        defer { worker.beginShutdown() }
        // Warm up: connections open, scripts loaded.
        for _ in 0..<20 { _ = try await roundTrip(farm, probe: probe) }
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for _ in 0..<samples {
            try await Task.sleep(for: .milliseconds(2))  // let the worker go back to sleep in BLPOP
            _ = histogram.record(UInt64(try await roundTrip(farm, probe: probe).nanoseconds))
        }
        worker.beginShutdown()
        _ = try? await task.value
        return (.nanoseconds(Int64(histogram.valueAtPercentile(50))), .nanoseconds(Int64(histogram.valueAtPercentile(99))))
    }

    private func roundTrip(_ farm: JobFarm, probe: PickupProbe) async throws -> Duration {
        let id = JobID.make()
        let start = ContinuousClock.now
        probe.expect(id)
        _ = try await farm.enqueue(EnqueueRequest(kind: PickupProbeJob.kind, queue: "pickup", id: id))
        let started = await probe.waitForStart()
        return started - start
    }

    private func cleanUp(_ client: RedisClient, namespace: String) async {
        var cursor = "0"
        repeat {
            guard let reply = try? await client.execute(RedisCommand("SCAN", cursor, "MATCH", "\(namespace):*", "COUNT", "10000")),
                let parts = reply.array, parts.count == 2
            else { return }
            cursor = parts[0].string ?? "0"
            let keys = (parts[1].array ?? []).compactMap(\.string)
            if !keys.isEmpty { _ = try? await client.send(keys.map { RedisCommand("UNLINK", $0) }) }  // one slot each on a cluster
        } while cursor != "0"
    }

    // MARK: - Formatting

    private func row(_ name: String, _ value: String, _ comparison: String) -> String {
        "  " + name.padding(toLength: 34, withPad: " ", startingAt: 0) + value.padding(toLength: 22, withPad: " ", startingAt: 0) + comparison
    }

    private func rate(_ perSecond: Double) -> String {
        let formatter = NumberFormatter()
        formatter.numberStyle = .decimal
        formatter.maximumFractionDigits = 0
        return (formatter.string(from: NSNumber(value: perSecond.rounded())) ?? "\(Int(perSecond))") + " /s"
    }

    private func micro(_ duration: Duration) -> String { String(format: "%.3f ms", duration.seconds * 1000) }

    private func ratio(_ value: Double, _ ceiling: Double, _ what: String, inverse: Bool = false) -> String {
        guard ceiling > 0 else { return "" }
        return inverse ? String(format: "= %.1f %@", value / ceiling, what) : String(format: "ratio %.3f %@", value / ceiling, what)
    }
}

/// A worker in this process running one benchmark handler (logging errors only), started: the worker and its task.
func startBenchWorker<H: JobHandler>(_ farm: JobFarm, handler: H, label: String,
                                     configuration: WorkerConfiguration) -> (Worker, Task<Void, Error>) {
    var registry = HandlerRegistry()
    registry.register(handler)
    var logger = Logger(label: label)
    logger.logLevel = .error
    let worker = Worker(farm: farm, registry: registry, configuration: configuration, logger: logger)
    return (worker, Task { try await worker.run() })
}

/// The handler whose start time the pickup benchmark measures.
struct PickupProbeJob: JobHandler {
    static let kind = "bench_pickup_probe"
    let probe: PickupProbe
    func run(_ parameters: JSONValue, context: JobContext) async throws -> JSONValue {
        probe.started(context.id)
        return .null
    }
}

/// Hands the handler's start time to the benchmark loop.
final class PickupProbe: Sendable {
    private struct State {
        var expected: String?
        var started: ContinuousClock.Instant?
        var waiter: CheckedContinuation<ContinuousClock.Instant, Never>?
    }
    private let state = Mutex(State())

    func expect(_ id: String) { state.withLock { $0 = State(expected: id) } }

    func started(_ id: String) {
        let now = ContinuousClock.now
        let waiter = state.withLock { state -> CheckedContinuation<ContinuousClock.Instant, Never>? in
            guard state.expected == id else { return nil }
            state.started = now
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: now)
    }

    func waitForStart() async -> ContinuousClock.Instant {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> ContinuousClock.Instant? in
                if let started = state.started { return started }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
