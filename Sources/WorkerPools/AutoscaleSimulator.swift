import Foundation

/// Replays an arrival trace through `AutoscalePolicy` (the same code the supervisor runs) on simulated processes:
/// what a policy does with 200 workers can be judged before it runs on a cluster.
///
/// Each process runs `concurrency` jobs at once and is ready `startupSeconds` after it is started; a process scaled
/// in stops taking jobs and leaves when its running jobs end (as SIGTERM does). Jobs are taken in strict tier order,
/// oldest first. The policy reads simulated signals every `settings.intervalSeconds`, including the `enqueued`,
/// `run_ms` and `run_count` counters, so the service time it sees is measured as in Redis.
public struct AutoscaleSimulator: Sendable {
    /// How long jobs take.
    public enum ServiceTimes: Sendable, Equatable {
        /// Exponentially distributed with this mean, in seconds.
        case exponential(mean: Double)
        /// Drawn at random from these measured times, in seconds.
        case samples([Double])
    }

    /// The pool simulated.
    public var policy: AutoscalePolicy
    /// How long jobs take.
    public var serviceTimes: ServiceTimes
    /// Seconds from starting a process to its first job.
    public var startupSeconds: Double
    /// The random seed (arrival times within a row, service times).
    public var seed: UInt64

    /// A simulation of `policy`'s pool.
    public init(policy: AutoscalePolicy, serviceTimes: ServiceTimes, startupSeconds: Double = 5, seed: UInt64 = 1) {
        self.policy = policy
        self.serviceTimes = serviceTimes
        self.startupSeconds = startupSeconds
        self.seed = seed
    }

    /// One policy step of the run.
    public struct Step: Sendable, Equatable {
        /// Seconds from the trace's start.
        public var atSeconds: Double
        /// Jobs arrived since the previous step.
        public var arrived: Int
        /// Jobs ready per tier.
        public var ready: [Int]
        /// Jobs running.
        public var running: Int
        /// Processes alive (starting, serving, or scaled in and finishing).
        public var processes: Int
        /// The decision.
        public var desired: Int
        /// Its driver.
        public var driver: AutoscaleDriver
    }

    /// What happened.
    public struct Result: Sendable, Equatable {
        /// The tiers, in priority order.
        public var tiers: [String]
        /// Every policy step.
        public var steps: [Step]
        /// Jobs per tier.
        public var jobs: [Int]
        /// Jobs finished.
        public var finished: Int
        /// Wait before start per tier, in seconds: 50th, 95th, 99th percentile and the longest.
        public var waits: [(p50: Double, p95: Double, p99: Double, max: Double)]
        /// Process-minutes spent (alive, including starting and finishing after scale-in).
        public var workerMinutes: Double
        /// When the last job finished, in seconds.
        public var lastFinishSeconds: Double
        /// The most processes alive at once.
        public var peakProcesses: Int

        public static func == (lhs: Result, rhs: Result) -> Bool {
            lhs.tiers == rhs.tiers && lhs.steps == rhs.steps && lhs.jobs == rhs.jobs && lhs.finished == rhs.finished
                && lhs.waits.elementsEqual(rhs.waits) { $0 == $1 } && lhs.workerMinutes == rhs.workerMinutes
                && lhs.lastFinishSeconds == rhs.lastFinishSeconds && lhs.peakProcesses == rhs.peakProcesses
        }
    }

    private struct Process {
        var readyAt: Double
        var busy = 0
        var retiring = false
        var gone = false
    }

    /// Runs the trace, then on until the jobs are done and the pool has had one stabilisation window to scale in
    /// (at most `trace.duration` more).
    public func run(_ trace: AutoscaleTrace) -> Result {
        var random = SplitMix64(seed: seed)
        let tierCount = trace.tiers.count
        let concurrency = policy.concurrency
        let interval = max(0.01, policy.settings.intervalSeconds)

        // Arrivals: (time, tier), in time order.
        var arrivals: [(Double, Int)] = []
        arrivals.reserveCapacity(trace.jobs)
        for bucket in trace.buckets {
            var inBucket: [(Double, Int)] = []
            for (tier, count) in bucket.counts.enumerated() {
                for _ in 0..<count { inBucket.append((bucket.start + random.nextUnit() * (bucket.end - bucket.start), tier)) }
            }
            inBucket.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
            arrivals.append(contentsOf: inBucket)
        }
        var nextArrival = 0

        var waiting = Array(repeating: [Double](), count: tierCount)
        var heads = Array(repeating: 0, count: tierCount)
        var waits = Array(repeating: [Double](), count: tierCount)
        var completions = MinHeap()
        var processes: [Process] = []
        var freeSlots: [Int] = []  // one entry per free slot: the process index (stale entries skipped)
        var running = 0, finished = 0, sequence = 0
        var runMilliseconds = 0, runCount = 0
        var workerSeconds = 0.0, lastFinish = 0.0, peak = 0
        var state = AutoscalePolicy.State()
        var steps: [Step] = []
        var arrivedSinceStep = 0
        var now = 0.0
        var drainedAt: Double?

        var aliveCount = 0, servingCount = 0
        func alive() -> Int { aliveCount }
        func serving() -> Int { servingCount }
        func drawService() -> Double {
            switch serviceTimes {
            case .exponential(let mean): return -mean * log(1 - random.nextUnit())
            case .samples(let samples): return samples.isEmpty ? 1 : samples[Int(random.next() % UInt64(samples.count))]
            }
        }
        func startJobs(at time: Double) {
            while !freeSlots.isEmpty {
                guard let tier = (0..<tierCount).first(where: { heads[$0] < waiting[$0].count }) else { return }
                let index = freeSlots.removeLast()
                guard !processes[index].retiring, !processes[index].gone, processes[index].readyAt <= time else { continue }
                let arrived = waiting[tier][heads[tier]]
                heads[tier] += 1
                waits[tier].append(time - arrived)
                processes[index].busy += 1
                running += 1
                let service = drawService()
                sequence += 1
                completions.push(HeapEntry(time: time + service, sequence: sequence, process: index, service: service))
            }
        }
        func advance(to time: Double) {
            workerSeconds += Double(alive()) * (time - now)
            now = time
        }
        func addProcess(at time: Double) {
            processes.append(Process(readyAt: time + startupSeconds))
            aliveCount += 1
            servingCount += 1
        }

        for _ in 0..<policy.minProcesses { addProcess(at: 0) }
        // Processes becoming ready: their slots join at `readyAt` (handled at each step and event by `wake`).
        var pendingReady: [Int] = Array(processes.indices)
        func wake(at time: Double) {
            pendingReady.removeAll { index in
                guard processes[index].readyAt <= time else { return false }
                if !processes[index].retiring && !processes[index].gone {
                    freeSlots.append(contentsOf: Array(repeating: index, count: concurrency))
                }
                return true
            }
        }

        let hardEnd = trace.duration * 2 + policy.settings.scaleDownWindowSeconds + 10 * interval
        var nextStep = 0.0
        while true {
            // Events up to the next policy step, in time order.
            while true {
                let arrivalTime = nextArrival < arrivals.count ? arrivals[nextArrival].0 : .infinity
                let completionTime = completions.peek?.time ?? .infinity
                let readyTime = pendingReady.map { processes[$0].readyAt }.min() ?? .infinity
                let time = min(arrivalTime, completionTime, readyTime)
                guard time <= nextStep else { break }
                advance(to: time)
                if time == completionTime, let done = completions.pop() {
                    running -= 1
                    finished += 1
                    lastFinish = time
                    runMilliseconds += Int((done.service * 1000).rounded())
                    runCount += 1
                    processes[done.process].busy -= 1
                    if processes[done.process].retiring {
                        if processes[done.process].busy == 0 {
                            processes[done.process].gone = true
                            aliveCount -= 1
                        }
                    } else {
                        freeSlots.append(done.process)
                    }
                } else if time == arrivalTime {
                    let (_, tier) = arrivals[nextArrival]
                    nextArrival += 1
                    arrivedSinceStep += 1
                    waiting[tier].append(time)
                } else {
                    wake(at: time)
                }
                startJobs(at: time)
            }
            advance(to: nextStep)
            wake(at: now)
            startJobs(at: now)

            // The policy's step.
            let tiers = (0..<tierCount).map { tier -> PoolSignals.Tier in
                let ready = waiting[tier].count - heads[tier]
                return PoolSignals.Tier(name: trace.tiers[tier], ready: ready, oldestAgeSeconds: ready > 0 ? now - waiting[tier][heads[tier]] : 0)
            }
            let signals = PoolSignals(
                atSeconds: now, tiers: tiers, inFlight: running, enqueued: nextArrival, runMilliseconds: runMilliseconds,
                runCount: runCount, processes: serving())
            let decision = policy.decide(signals, state: &state)
            var current = serving()
            while current < decision.desired {
                addProcess(at: now)
                pendingReady.append(processes.count - 1)
                current += 1
            }
            if current > decision.desired {
                // Scale in the newest first (those still starting go at once).
                for index in processes.indices.reversed() where current > decision.desired {
                    guard !processes[index].retiring, !processes[index].gone else { continue }
                    processes[index].retiring = true
                    servingCount -= 1
                    if processes[index].busy == 0 {
                        processes[index].gone = true
                        aliveCount -= 1
                    }
                    current -= 1
                }
            }
            wake(at: now)
            startJobs(at: now)
            peak = max(peak, alive())
            steps.append(Step(
                atSeconds: now, arrived: arrivedSinceStep, ready: tiers.map(\.ready), running: running, processes: alive(),
                desired: decision.desired, driver: decision.driver))
            arrivedSinceStep = 0

            let drained = nextArrival == arrivals.count && running == 0 && tiers.allSatisfy { $0.ready == 0 } && now >= trace.duration
            if drained && drainedAt == nil { drainedAt = now }
            if !drained { drainedAt = nil }
            if let drainedAt, alive() <= policy.minProcesses || now >= drainedAt + policy.settings.scaleDownWindowSeconds + 2 * interval { break }
            if now >= hardEnd { break }
            nextStep = now + interval
        }

        let summaries = waits.map { values -> (p50: Double, p95: Double, p99: Double, max: Double) in
            let sorted = values.sorted()
            func percentile(_ p: Double) -> Double {
                sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)]
            }
            return (percentile(0.50), percentile(0.95), percentile(0.99), sorted.last ?? 0)
        }
        let jobs = (0..<tierCount).map { tier in arrivals.reduce(0) { $0 + ($1.1 == tier ? 1 : 0) } }
        return Result(
            tiers: trace.tiers, steps: steps, jobs: jobs, finished: finished, waits: summaries,
            workerMinutes: workerSeconds / 60, lastFinishSeconds: lastFinish, peakProcesses: peak)
    }
}

extension AutoscaleSimulator.Result {
    /// The printed report: one row per `every` seconds of steps (workers over time), then waits per tier and
    /// worker-minutes.
    public func table(every: Double? = nil) -> String {
        let span = steps.last?.atSeconds ?? 0
        let period = every ?? max(steps.count > 1 ? steps[1].atSeconds - steps[0].atSeconds : 1, niceStep(span / 40))
        var lines = ["time      arrived  " + tiers.map { pad($0, 9) }.joined() + "running  processes  desired  driver"]
        var nextRow = 0.0
        var arrived = 0
        for step in steps {
            arrived += step.arrived
            guard step.atSeconds + 1e-9 >= nextRow || step == steps.last else { continue }
            lines.append(pad(clock(step.atSeconds), 10) + pad("\(arrived)", 9) + step.ready.map { pad("\($0)", 9) }.joined()
                         + pad("\(step.running)", 9) + pad("\(step.processes)", 11) + pad("\(step.desired)", 9) + step.driver.rawValue)
            arrived = 0
            nextRow = step.atSeconds + period
        }
        lines.append("")
        lines.append("tier      jobs      wait p50   wait p95   wait p99   wait max")
        for (index, tier) in tiers.enumerated() {
            let wait = waits[index]
            lines.append(pad(tier, 10) + pad("\(jobs[index])", 10) + [wait.p50, wait.p95, wait.p99, wait.max].map { pad(String(format: "%.2f s", $0), 11) }.joined())
        }
        lines.append("")
        lines.append(String(format: "jobs finished %d of %d; last at %@; peak processes %d; worker-minutes %.1f",
                            finished, jobs.reduce(0, +), clock(lastFinishSeconds), peakProcesses, workerMinutes))
        return lines.joined(separator: "\n") + "\n"
    }

    /// An SVG plot: processes (and desired) over time above, ready jobs per tier below.
    public func svg(title: String) -> String {
        let width = 900.0, panel = 220.0, left = 60.0, top = 40.0, gap = 50.0
        let span = max(1, steps.last?.atSeconds ?? 1)
        let maxProcesses = Double(max(1, steps.map { max($0.processes, $0.desired) }.max() ?? 1))
        let maxReady = Double(max(1, steps.flatMap(\.ready).max() ?? 1))
        func x(_ t: Double) -> Double { left + t / span * (width - left - 20) }
        func line(_ values: [Double], maximum: Double, y0: Double, color: String, dash: Bool = false) -> String {
            let points = zip(steps, values).map { String(format: "%.1f,%.1f", x($0.atSeconds), y0 + panel - $1 / maximum * panel) }
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\"\(dash ? " stroke-dasharray=\"4 3\"" : "") points=\"\(points.joined(separator: " "))\"/>"
        }
        let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
        var parts = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(top + 2 * panel + gap + 40))\" font-family=\"sans-serif\" font-size=\"12\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(Int(left))\" y=\"20\" font-size=\"14\">\(escape(title))</text>",
        ]
        for (y0, label, maximum) in [(top, "processes (solid), desired (dashed)", maxProcesses), (top + panel + gap, "ready jobs per tier", maxReady)] {
            parts.append(String(format: "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#999\"/>", left, y0, width - left - 20, panel))
            parts.append(String(format: "<text x=\"%.0f\" y=\"%.0f\">%@</text>", left + 5, y0 + 14, label))
            parts.append(String(format: "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.0f</text>", left - 5, y0 + 10, maximum))
            parts.append(String(format: "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">0</text>", left - 5, y0 + panel))
        }
        parts.append(line(steps.map { Double($0.processes) }, maximum: maxProcesses, y0: top, color: "#333"))
        parts.append(line(steps.map { Double($0.desired) }, maximum: maxProcesses, y0: top, color: "#ff7f0e", dash: true))
        for (index, tier) in tiers.enumerated() {
            let y0 = top + panel + gap
            parts.append(line(steps.map { Double($0.ready[index]) }, maximum: maxReady, y0: y0, color: colors[index % colors.count]))
            parts.append(String(format: "<text x=\"%.0f\" y=\"%.0f\" fill=\"%@\">%@</text>", width - 120, y0 + 14 + Double(index) * 14, colors[index % colors.count], escape(tier)))
        }
        let axisY = top + 2 * panel + gap + 16
        for tick in 0...4 {
            let t = span * Double(tick) / 4
            parts.append(String(format: "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%@</text>", x(t), axisY, clock(t)))
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n") + "\n"
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    private func clock(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        return String(format: "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60)
    }

    private func niceStep(_ seconds: Double) -> Double {
        for step in [1.0, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600] where step >= seconds { return step }
        return 7200
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// A small seeded generator (SplitMix64): the same seed gives the same run on every machine.
struct SplitMix64 {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// A job running in the simulation, by finish time.
struct HeapEntry {
    var time: Double
    var sequence: Int
    var process: Int
    var service: Double

    func precedes(_ other: HeapEntry) -> Bool { time < other.time || (time == other.time && sequence < other.sequence) }
}

/// A binary min-heap of running jobs by finish time (ties by start order, so runs repeat exactly).
struct MinHeap {
    private var items: [HeapEntry] = []

    var peek: HeapEntry? { items.first }

    mutating func push(_ entry: HeapEntry) {
        items.append(entry)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> HeapEntry? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var first = parent
            if left < items.count && items[left].precedes(items[first]) { first = left }
            if right < items.count && items[right].precedes(items[first]) { first = right }
            if first == parent { break }
            items.swapAt(parent, first)
            parent = first
        }
        return top
    }
}
