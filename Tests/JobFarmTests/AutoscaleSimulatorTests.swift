import Foundation
import JobFarmTesting
import Testing
import WorkerPools

/// The trace simulator: the sample traces parse, a run is the same for the same seed, and what it prints follows
/// from the policy (bounds, scale-up on the spike, scale-down after it, every job done).
@Suite("Autoscale simulator")
struct AutoscaleSimulatorTests {
    static func trace(_ name: String) throws -> AutoscaleTrace {
        try AutoscaleTrace(path: PackagePaths.root.appendingPathComponent("jobs/traces/\(name)").path)
    }

    /// FNV-1a, 64 bits: a digest of the printed table to compare two runs by.
    static func digest(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }

    static func spikePolicy() -> AutoscalePolicy {
        AutoscalePolicy(
            settings: AutoscaleSettings(scaleUpCooldownSeconds: 30, scaleDownWindowSeconds: 120, intervalSeconds: 5, serviceTimeSeconds: 0.5),
            minProcesses: 2, maxProcesses: 20, concurrency: 10)
    }

    @Test func theSampleTracesParse() throws {
        let burst = try Self.trace("nightly-burst.csv")
        #expect(burst.tiers == ["premium", "standard", "free"])
        #expect(burst.buckets.reduce(0) { $0 + $1.counts[2] } == 100_000, "a nightly burst of 100,000 free-tier jobs")
        let sine = try Self.trace("daytime-sine.csv")
        #expect(sine.duration == 86_400)
        let standard = sine.buckets.map { $0.counts[1] }
        #expect(standard.max()! > 4 * standard.min()!, "the day's peak is well above the night")
        let spike = try Self.trace("spike.csv")
        #expect(spike.buckets.map { $0.counts[0] }.max()! >= 100 * spike.buckets.map { $0.counts[0] }.min()!)
    }

    @Test func aTraceWithAMistakeNamesItsLine() {
        func message(_ text: String) -> String {
            do {
                _ = try AutoscaleTrace(csv: text, path: "t.csv")
                return ""
            } catch {
                return "\(error)"
            }
        }
        #expect(message("seconds,standard\n0,5\n10,x\n20,0\n") == "t.csv:3: 'x' is not a job count (a whole number 0…100000000)")
        #expect(message("seconds,standard\n0,5\n0,5\n20,0\n").hasPrefix("t.csv:3: '0' is not a time in seconds after the previous row's"))
        #expect(message("seconds,standard\n0,5\n10,5\n") == "t.csv:3: the last row ends the trace: its counts must be 0")
        #expect(message("time,standard\n0,5\n10,0\n").hasPrefix("t.csv:1: the header must be"))
        #expect(message("seconds,a,b\n0,5\n10,0,0\n") == "t.csv:2: has 2 fields; the header has 3")
    }

    @Test(.timeLimit(.minutes(1))) func theSameTraceAndSeedPrintTheSameTable() throws {
        let trace = try Self.trace("spike.csv")
        let simulator = AutoscaleSimulator(policy: Self.spikePolicy(), serviceTimes: .exponential(mean: 0.5), seed: 42)
        let first = simulator.run(trace)
        let second = simulator.run(trace)
        let (table, again) = (first.table(), second.table())
        #expect(Self.digest(table) == Self.digest(again), "\(table)\n---\n\(again)")
        #expect(first == second)
        var other = simulator
        other.seed = 43
        #expect(Self.digest(other.run(trace).table()) != Self.digest(table), "the seed is used")

        // What the table says follows from the policy.
        #expect(first.finished == trace.jobs && first.jobs.reduce(0, +) == trace.jobs)
        for step in first.steps {
            #expect(step.desired >= 2 && step.desired <= 20)
        }
        let before = first.steps.filter { $0.atSeconds < 600 }.map(\.desired).max()!
        let during = first.steps.filter { $0.atSeconds >= 600 && $0.atSeconds < 700 }.map(\.desired).max()!
        #expect(before <= 3, "2 standard jobs/s of 0.5 s need 1 slot")
        #expect(during > before, "the premium spike scales up")
        #expect(first.steps.last!.desired == 2, "back to min after the window")
        // Scale-ups are 30 s apart at least.
        var lastUp: Double?
        for (previous, step) in zip(first.steps, first.steps.dropFirst()) where step.desired > previous.desired {
            if let lastUp { #expect(step.atSeconds - lastUp >= 30) }
            lastUp = step.atSeconds
        }
        #expect(first.waits[1].p95 < 10, "standard within its 10 s target at p95")
        #expect(first.workerMinutes > 2 * 30 && first.workerMinutes < 20 * 40)
        #expect(table.contains("wait p95") && table.contains("worker-minutes"))
        let svg = first.svg(title: "spike")
        #expect(svg.hasPrefix("<svg") && svg.contains("<polyline") && svg.hasSuffix("</svg>\n"))
    }

    @Test(.timeLimit(.minutes(1))) func theNightlyBurstScalesToMaxAndBack() throws {
        let trace = try Self.trace("nightly-burst.csv")
        let policy = AutoscalePolicy(
            settings: AutoscaleSettings(scaleUpCooldownSeconds: 30, scaleDownWindowSeconds: 300, intervalSeconds: 10, serviceTimeSeconds: 1),
            minProcesses: 2, maxProcesses: 50, concurrency: 10)
        let result = AutoscaleSimulator(policy: policy, serviceTimes: .exponential(mean: 1), seed: 7).run(trace)
        #expect(result.finished == trace.jobs)
        // 50,000 jobs a minute of 1 s each need 834 slots: the pool goes to its max of 50 processes (500 slots)…
        #expect(result.peakProcesses == 50)
        #expect(result.steps.contains { $0.driver == .maximum })
        // …holds it through the window once drained, then goes back to min.
        let drained = try #require(result.steps.first { $0.atSeconds > 400 && $0.ready.reduce(0, +) == 0 && $0.running < 20 })
        let lastAtMax = try #require(result.steps.last { $0.desired == 50 })
        #expect(lastAtMax.atSeconds >= drained.atSeconds + 200)
        #expect(result.steps.last!.desired == 2)
        // The free tier's 60 s target cannot hold at 500 slots (100,000 s of work take 200 s); premium, served
        // first, stays fast.
        #expect(result.waits[2].p95 > 60)
        #expect(result.waits[0].p95 < 5)
    }

    @Test(.timeLimit(.minutes(1))) func theCommandPrintsTheSameTableTwiceAndWritesTheSVG() async throws {
        let svg = FileManager.default.temporaryDirectory.appendingPathComponent("spike-\(UUID().uuidString).svg").path
        defer { try? FileManager.default.removeItem(atPath: svg) }
        let trace = PackagePaths.root.appendingPathComponent("jobs/traces/spike.csv").path
        let arguments = ["autoscale", "simulate", "--trace", trace, "--seed", "3", "--service-time", "0.5", "--max", "20"]
        var outputs: [String] = []
        for extra in [["--svg", svg], []] {
            let child = try ChildProcess(arguments + extra)
            #expect(await child.waitForExit(timeout: .seconds(40)) == 0, "\(child.text)")
            try await eventually(timeout: .seconds(5), "the summary") { child.text.contains("worker-minutes") }
            outputs.append(child.text)
        }
        #expect(Self.digest(outputs[0]) == Self.digest(outputs[1]), "\(outputs[0])\n---\n\(outputs[1])")
        #expect(outputs[0].hasPrefix("trace spike.csv: "), "\(outputs[0])")
        #expect(outputs[0].contains("processes 2…20 × 10 jobs"))
        let plot = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(plot.hasPrefix("<svg") && plot.contains("spike.csv, seed 3"))
        // A trace with a mistake: its line, exit 1.
        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).csv").path
        defer { try? FileManager.default.removeItem(atPath: bad) }
        try "seconds,standard\n0,5\n10,x\n20,0\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let failing = try ChildProcess(["autoscale", "simulate", "--trace", bad])
        #expect(await failing.waitForExit(timeout: .seconds(20)) == 1)
        try await eventually(timeout: .seconds(5), "the error") { failing.text.contains("\(bad):3: 'x' is not a job count") }
    }
}
