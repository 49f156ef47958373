import ArgumentParser
import Compute
import Dispatch
import Foundation
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import ModelStore
import RedisClient

/// `jobfarm bench blas`: the compute figures of issue 10, each beside its ceiling measured in the same run.
///
/// GEMM GFLOP/s through the farm's code vs raw `cblas_sgemm`/`sgemv` and the machine's FP32 peak; FP16→FP32
/// GB/s vs memcpy; single-row inference requests/s through the real queue with and without dynamic batching;
/// digits training wall time. A port of compute-dev's compute-bench.
struct BenchBLASCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blas", abstract: "Compute benchmarks: GEMM, FP16 conversion, batched inference through the queue, training.",
        discussion: """
            Runs the worker's OpenBLAS kernel chooser first and, like the worker, re-executes itself with the faster \
            kernels (OPENBLAS_CORETYPE), so the figures are those of the kernels a worker on this machine runs; the \
            first line says which and why. Compare kernels by hand with OPENBLAS_CORETYPE=SkylakeX (or \
            JOBFARM_BLAS_AUTOTUNE=0 for the library's own pick) in the environment.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(parsing: .unconditional, help: "OpenBLAS threads for the GEMM figures.") var threads: Int = 1
    @Option(help: "Sections to run: gemm,fp16,kernels,passes,queue,inference,train.") var only: String = "gemm,fp16,kernels,passes,queue,inference,train"
    @Option(parsing: .unconditional, help: "Worker processes in the end-to-end inference runs.") var inferenceWorkers: Int = 2
    @Option(parsing: .unconditional, help: "Seconds per queue run.") var queueSeconds: Double = 5
    @Option(parsing: .unconditional, help: "Worker concurrency in the queue runs.") var clients: Int = 64
    @Option(parsing: .unconditional, help: "Jobs per fetch in the queue runs.") var fetchBatch: Int = 100
    @Option(help: "Offered loads (jobs/s) of the open-loop queue runs.") var rates: String = "100,200,300,400,600,800,1000,1200,1400,1600,2000,2400,2800,3200,4000,4800"
    @Option(help: "Serving precisions of the queue runs: fp32 (the model as pushed), fp16 and int8 (quantized and validated against it, served as bench-mlp:latest@fp16 and @int8).") var precisions: String = "fp32,fp16,int8"
    @Option(parsing: .unconditional, help: "Inputs per row of the queue benchmark model.") var inputs: Int = 64
    @Option(help: "Hidden layer widths of the queue benchmark model (10 classes out).") var hidden: String = "4096,4096"
    @Option(parsing: .unconditional, help: "Dynamic batching: most rows per pass.") var maxBatch: Int = 32
    @Option(parsing: .unconditional, help: "Dynamic batching: most wait, in milliseconds.") var maxDelayMs: Double = 2
    @Option(parsing: .unconditional, help: "Dynamic batching: passes at once (0 = one per compute thread).") var passes: Int = 1
    @Option(help: "Dynamic batching: start a pass at once when none runs (true), or always wait for maxDelay/maxBatch (false, Triton's rule).") var dispatchWhenIdle: Bool = true
    @Option(parsing: .unconditional, help: "Nice value of the compute threads in the queue runs.") var computeNice: Int = 5
    @Option(help: "Queue runs: off (no batching), on (dynamic batching), or both.") var batching: String = "off,on"
    @Option(help: "digits.csv path.") var digits: String = "data/digits/digits.csv"

    func validate() throws {
        try OptionCheck.integer(threads, "--threads", atLeast: 1)
        try OptionCheck.integer(inferenceWorkers, "--inference-workers", atLeast: 1)
        try OptionCheck.seconds(queueSeconds, "--queue-seconds", positive: true)
        try OptionCheck.integer(clients, "--clients", atLeast: 1)
        try OptionCheck.integer(fetchBatch, "--fetch-batch", atLeast: 1)
        try OptionCheck.integer(inputs, "--inputs", atLeast: 1)
        try OptionCheck.integer(maxBatch, "--max-batch", atLeast: 1)
        try OptionCheck.seconds(maxDelayMs, "--max-delay-ms", unit: "milliseconds")
        try OptionCheck.integer(passes, "--passes", atLeast: 0)
        try OptionCheck.integer(computeNice, "--compute-nice", atLeast: -20, atMost: 19)
        _ = try OptionCheck.positiveNumbers(rates, "--rates")
        for name in precisions.split(separator: ",") where Precision(rawValue: String(name)) == nil {
            throw ValidationError("--precisions: \(name) is not a precision; use fp32, fp16 or int8 separated by commas")
        }
        _ = try OptionCheck.integers(hidden, "--hidden", atLeast: 1)
    }

    func run() async throws {
        global.bootstrapLogging()
        // Before anything is printed: this may re-execute the process with OPENBLAS_CORETYPE set.
        let choice = BLASKernelSelection.run(logger: Logger(label: "jobfarm.blas"))
        let sections = Set(only.split(separator: ",").map(String.init))
        BLASThreads.set(threads)
        print("kernel choice (the worker's chooser, docs/JOBS.md): \(BLASInfo.coreName) — \(choice)")
        print("OpenBLAS \(BLASInfo.config)")
        print("kernels: \(BLASInfo.coreName)   OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)")   BLAS threads: \(BLASThreads.current)   F16C: \(FP16Conversion.hardwareAccelerated)")
        let peak = CPUPeak.read()
        print("FP32 peak: \(peak.description)\n")
        if sections.contains("gemm") { try gemm(peak: peak) }
        if sections.contains("fp16") { try fp16() }
        if sections.contains("kernels") { try kernels() }
        if sections.contains("passes") { try passes(model: try queueModel()) }
        if sections.contains("queue") { try await queue() }
        if sections.contains("inference") { try await inference() }
        if sections.contains("train") { try train() }
    }

    // MARK: GEMM

    func gemm(peak: CPUPeak) throws {
        let n = 1024, k = 1024
        var rng = SeededRandom(seed: 1)
        let weight = (0..<(n * k)).map { _ in rng.nextUnitFloat() - 0.5 }
        let bias = (0..<n).map { _ in rng.nextUnitFloat() }
        let config = ModelConfig(layers: [DenseLayerConfig(weight: "w", bias: "b", activation: .none)])
        let model32 = try MLPModel(config: config, tensors: ["w": Tensor(shape: [n, k], float32: weight), "b": Tensor(shape: [n], float32: bias)])
        let model16 = try Quantization.convert(model32, to: .fp16).model
        let model8 = try Quantization.convert(model32, to: .int8).model
        let nominal = peak.gflops(threads: BLASThreads.current)
        // The nominal clock of a VM understates turbo: a large square sgemm shows what the cores really reach.
        let big = 2048
        let a = (0..<(big * big)).map { _ in rng.nextUnitFloat() }
        var cBig = [Float](repeating: 0, count: big * big)
        let tBig = try BenchTiming.interleaved(rounds: 3, minTime: 0.3, [{
            a.withUnsafeBufferPointer { ap in
                cBig.withUnsafeMutableBufferPointer { cp in
                    RawBLAS.sgemm(m: big, n: big, k: big, a: ap.baseAddress!, b: ap.baseAddress!, transposeB: false, c: cp.baseAddress!)
                }
            }
        }])[0]
        let measuredPeak = 2 * pow(Double(big), 3) / tBig / 1e9
        let ceiling = max(nominal, measuredPeak)
        print("GEMM y[batch,1024] = x[batch,1024]·W[1024,1024]ᵀ + b, GFLOP/s (best of 9 interleaved rounds)")
        print(String(format: "ceilings: best raw cblas call on the same shape in this run; FP32 peak of %d core(s) = %.0f GFLOP/s (the larger of nominal %.0f and a 2048³ sgemm measured at %.0f)",
                     BLASThreads.current, ceiling, nominal, measuredPeak))
        print("batch  raw-sgemm  raw-sgemv  best-raw | BLAS.linear ratio | model-fp32 ratio | peak-ratio | model-fp16 model-int8")
        for batch in [1, 8, 64, 512] {
            let x = (0..<(batch * k)).map { _ in rng.nextUnitFloat() }
            var c = [Float](repeating: 0, count: batch * n)
            let flops = 2.0 * Double(batch * n * k)
            let sgemm = {
                x.withUnsafeBufferPointer { xp in
                    weight.withUnsafeBufferPointer { wp in
                        c.withUnsafeMutableBufferPointer { cp in
                            RawBLAS.sgemm(m: batch, n: n, k: k, a: xp.baseAddress!, b: wp.baseAddress!, transposeB: true, c: cp.baseAddress!)
                        }
                    }
                }
            }
            let sgemv = {
                x.withUnsafeBufferPointer { xp in
                    weight.withUnsafeBufferPointer { wp in
                        c.withUnsafeMutableBufferPointer { cp in
                            for row in 0..<batch {
                                RawBLAS.sgemv(rows: n, cols: k, a: wp.baseAddress!, x: xp.baseAddress! + row * k, y: cp.baseAddress! + row * n)
                            }
                        }
                    }
                }
            }
            let t = try BenchTiming.interleaved([
                { sgemm() },
                { sgemv() },
                { _ = try BLAS.linear(input: x, batch: batch, weight: weight, outFeatures: n, inFeatures: k, bias: bias) },
                { _ = try model32.forward(rows: x, batch: batch) },
                { _ = try model16.forward(rows: x, batch: batch) },
                { _ = try model8.forward(rows: x, batch: batch) },
            ])
            let g = t.map { flops / $0 / 1e9 }
            let best = max(g[0], g[1])
            print(String(format: "%5d  %9.1f  %9.1f  %8.1f | %11.1f %5.2f | %10.1f %5.2f | %10.2f | %10.1f %10.1f",
                         batch, g[0], g[1], best, g[2], g[2] / best, g[3], g[3] / best, g[3] / ceiling, g[4], g[5]))
        }
        print("")
    }

    // MARK: FP16

    func fp16() throws {
        let count = 32 * 1024 * 1024  // 64 MiB of FP16
        let halves = (0..<count).map { Float16(Float($0 % 4096) * 0.125) }
        var floats = [Float](repeating: 0, count: count)
        var copy16 = [Float16](repeating: 0, count: count)
        let bytes = Double(count * 2)
        let t = try BenchTiming.interleaved(rounds: 5, minTime: 0.2, [
            { try FP16Conversion.convert(halves, into: &floats) },
            {
                copy16.withUnsafeMutableBytes { d in halves.withUnsafeBytes { s in _ = memcpy(d.baseAddress!, s.baseAddress!, s.count) } }
            },
        ])
        let kernel = bytes / t[0] / 1e9, copy = bytes / t[1] / 1e9
        print("FP16→FP32, 64 MiB of FP16, one thread: \(String(format: "%.2f", kernel)) GB/s of FP16 read"
              + "  | ceiling memcpy of the same 64 MiB \(String(format: "%.2f", copy)) GB/s  | ratio \(String(format: "%.2f", kernel / copy))  | goal ≥ 8 GB/s\n")
    }

    // MARK: Queue

    func queue() async throws {
        for name in precisions.split(separator: ",") {
            try await queue(precision: Precision(rawValue: String(name)) ?? .fp32)
        }
    }

    /// The open-loop runs of one serving precision: FP32 serves the model as pushed (`bench-mlp`); FP16 and int8
    /// quantize it (`quantize` job), validate the result against it (`validate` job: the registry records the
    /// validation) and serve it only through `bench-mlp:latest@fp16` / `@int8`, as a client asking for that precision does.
    func queue(precision: Precision) async throws {
        let sizes = [inputs] + hidden.split(separator: ",").compactMap { Int($0) } + [10]
        let model = try queueModel()
        var rng = SeededRandom(seed: 4)
        let input = (0..<inputs).map { _ in Double(rng.nextUnitFloat()) }
        let reference = precision == .fp32 ? "bench-mlp" : "bench-mlp:latest@\(precision.rawValue)"
        let payload = try JSONValue(encoding: BenchInferencePayload(model: reference, inputs: [input], returnLogits: false))
        let offered = rates.split(separator: ",").compactMap { Double($0) }.sorted()
        print("Single-row inference through the queue: model \(sizes.map(String.init).joined(separator: "→")) \(precision.rawValue), served as \"\(reference)\"; open loop: jobs enqueued at a fixed rate for \(queueSeconds) s, latency = server time from enqueue to finish; worker concurrency \(clients), fetch batch \(fetchBatch)")
        var best: [Double] = [], kept: [Double] = []
        let modes = batching.split(separator: ",").map { $0 == "on" }
        for batching in modes {
            var configuration = try global.farmConfiguration()
            configuration.namespace = "bench-ml-\(UInt32.random(in: 0...UInt32.max))"
            let farm = try JobFarm(configuration: configuration, connections: 4)
            var options = MLJobOptions(
                batching: .init(enabled: batching, maxBatch: maxBatch, maxDelay: .microseconds(Int64(maxDelayMs * 1000)),
                                dispatchWhenIdle: dispatchWhenIdle, maxConcurrentPasses: passes > 0 ? passes : nil),
                workerConcurrency: clients, blasThreads: 1, computeNice: computeNice)
            options.referenceTTL = .seconds(60)
            var registry = HandlerRegistry()
            var logger = Logger(label: "bench.ml")
            logger.logLevel = .warning
            let environment = registerMLJobs(into: &registry, farm: farm, options: options, logger: logger)
            _ = try await environment.models.push(model: model, name: "bench-mlp")
            if precision != .fp32 {
                let note = try await BenchServingPrecision.quantizeAndValidate(environment: environment, model: model, precision: precision)
                if batching == modes.first { print("  \(note)") }
            }
            let worker = Worker(farm: farm, registry: registry,
                                configuration: WorkerConfiguration(queues: ["bench-inference"], concurrency: clients, fetchBatch: fetchBatch, shutdownGrace: .seconds(5)),
                                logger: logger)
            let workerTask = Task { try await worker.run() }
            // Warm-up: the first job loads the model into the worker's cache.
            for _ in 0..<3 {
                let id = try await farm.enqueue(EnqueueRequest(kind: "inference", queue: "bench-inference", payload: payload))
                _ = try await farm.wait(for: id, queue: "bench-inference", timeout: .seconds(60))
            }
            let label = batching ? "dynamic batching (maxBatch \(maxBatch), maxDelay \(maxDelayMs) ms)" : "no batching"
            print("  \(label):")
            var sustained = 0.0, keptUpTo = 0.0
            for rate in offered {
                _ = environment.batcher.takeSamples()
                let passesBefore = environment.batcher.passes, requestsBefore = environment.batcher.requests
                let run = try await QueueRun.openLoop(farm: farm, payload: payload, rate: rate, seconds: queueSeconds)
                let passes = environment.batcher.passes - passesBefore, requests = environment.batcher.requests - requestsBefore
                let keptUp = run.throughput >= 0.95 * rate && run.failed == 0 && run.unfinished == 0
                if keptUp { keptUpTo = max(keptUpTo, run.throughput) }
                if keptUp && run.p99 < 0.020 { sustained = max(sustained, run.throughput) }
                print(String(format: "    offered %6.0f/s → done %6.0f/s, p50 %5.1f ms, p99 %6.1f ms (of which queue→lease p50 %4.1f, p99 %5.1f), %5d jobs, %d failed, %d unfinished, %.1f rows/pass%@",
                             rate, run.throughput, run.p50 * 1000, run.p99 * 1000, run.waitP50 * 1000, run.waitP99 * 1000, run.completed, run.failed, run.unfinished,
                             passes > 0 ? Double(requests) / Double(passes) : 0, keptUp && run.p99 < 0.020 ? "" : "  (over: not kept up or p99 ≥ 20 ms)"))
                let samples = environment.batcher.takeSamples()
                if batching, !samples.passes.isEmpty {
                    let waits = samples.waits.sorted(), passTimes = samples.passes.map(\.seconds).sorted()
                    func ms(_ v: [Double], _ q: Double) -> Double { percentile(v, q) * 1000 }
                    print(String(format: "        in the batcher: wait for a pass p50 %.1f ms, p99 %.1f ms; pass p50 %.1f ms, p99 %.1f ms, %d passes, busy %.0f%% of the run",
                                 ms(waits, 0.5), ms(waits, 0.99), ms(passTimes, 0.5), ms(passTimes, 0.99), passTimes.count,
                                 100 * passTimes.reduce(0, +) / queueSeconds))
                }
                if !keptUp { break }
            }
            print(String(format: "    → highest load kept up with: %.0f requests/s; at p99 < 20 ms: %.0f requests/s", keptUpTo, sustained))
            best.append(sustained)
            kept.append(keptUpTo)
            worker.beginShutdown()
            _ = try? await workerTask.value
            try await BenchCleanup.removeNamespace(farm: farm)
        }
        let perRow = try singleRowMilliseconds(precision == .fp32 ? model : try Quantization.convert(model, to: precision).model)
        if modes == [false, true] {
            print(String(format: "  %@: unbatched %.0f/s kept up with, %.0f/s at p99 < 20 ms; batched %.0f/s kept up with, %.0f/s at p99 < 20 ms",
                         precision.rawValue, kept[0], best[0], kept[1], best[1]))
            print(String(format: "  speed-up with batching: %.2f× in requests/s kept up with, %.2f× at p99 < 20 ms (goal ≥ 5× at p99 < 20 ms)", kept[1] / max(1, kept[0]), best[1] / max(1, best[0])))
        }
        print(String(format: "  ceiling: an unbatched forward pass costs %.3f ms per row → %.0f rows/s per core",
                     perRow, 1000 / perRow))
        print("")
    }

    /// Forward-pass time of the queue benchmark's model per batch size on 1 and 2 threads (and every core): the
    /// farm's path beside the best raw OpenBLAS call on as many threads, and each pass beside its roofline bound
    /// (weight bytes ÷ memcpy rate, FLOPs ÷ the best raw sgemm rate, both measured here), for the FP32, FP16 and
    /// int8 versions of the model.
    func passes(model: MLPModel) throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let threadCounts = Array(Set([1, 2, cores])).sorted()
        let models = [("fp32", model), ("fp16", try Quantization.convert(model, to: .fp16).model),
                      ("int8", try Quantization.convert(model, to: .int8).model)]
        let shapes = model.layers.map { $0.inFeatures * $0.outFeatures }
        let multiplyAdds = Double(shapes.reduce(0, +))
        print("Forward passes of the queue model (\(([model.inputSize] + hidden.split(separator: ",").compactMap { Int($0) } + [model.outputSize]).map(String.init).joined(separator: "→"))): "
              + models.map { String(format: "%@ %.1f MB", $0.0, Double($0.1.tensorByteCount) / 1e6) }.joined(separator: ", ") + " of weights")
        BLASThreads.set(1)
        let calibration = SmallBatchKernel.calibrate()
        print("small-batch kernel limits measured on this machine (as a worker does at start), 1 thread, speed-up of the kernel over sgemm per batch:")
        for result in calibration { print("  \(result)") }
        for t in threadCounts where t > 1 {
            print("split limits on \(t) threads (measured as a worker whose batched passes use \(t) threads does at start; OpenBLAS on \(t) threads above):")
            for result in SmallBatchKernel.calibrateSplit(threads: t) { print("  \(result)") }
        }
        print("FP16 and int8 layers' own limits (measured as a worker does at start: the kernel against converting the weights and OpenBLAS):")
        for precision in [Precision.fp16, .int8] {
            for t in threadCounts {
                for result in SmallBatchKernel.calibrate(precision: precision, threads: t) { print("  \(result)") }
            }
        }
        BLASThreads.set(1)
        print("""
            columns: farm = model.logits(threads:) as the batcher runs it; raw = the best of two raw OpenBLAS paths on as \
            many OpenBLAS threads, every layer through cblas_sgemm (cblas_sgemv at one row) or one cblas_sgemv per row \
            (same bias and activation, the small-batch kernel off); ratio = raw ÷ farm (goal ≥ 0.95); roof = \
            max(weight bytes ÷ memcpy rate, FLOPs ÷ best raw sgemm rate), both measured in this run on as many threads; \
            ÷roof = pass ÷ roof (goal ≤ 1.3 at 1–64 rows, FP32). Best of 3 interleaved rounds.
            """)
        var rng = SeededRandom(seed: 3)
        for t in threadCounts {
            let (copyRate, gemmRate) = try ceilings(threads: t)
            print(String(format: "%d thread(s): memcpy %.2f GB/s, raw sgemm %.1f GFLOP/s (%d×%d×%d, %d OpenBLAS threads)", t, copyRate / 1e9, gemmRate / 1e9,
                         Self.ceilingShape.m, Self.ceilingShape.n, Self.ceilingShape.k, t))
            print(" rows |  fp32 ms   rows/s   raw ms  ratio   roof ms ÷roof |  fp16 ms ÷roof |  int8 ms ÷roof")
            for batch in [1, 2, 4, 8, 16, 32, 64, 128] {
                let x = (0..<(batch * model.inputSize)).map { _ in rng.nextUnitFloat() }
                let row = Array(x[0..<model.inputSize])
                let seconds = try BenchTiming.interleaved(rounds: 3, minTime: 0.1, [
                    { BLASThreads.set(1); SmallBatchKernel.isEnabled = true; _ = try models[0].1.logits(rows: x, batch: batch, threads: t) },
                    { BLASThreads.set(t); SmallBatchKernel.isEnabled = false; _ = try model.logits(rows: x, batch: batch) },
                    { BLASThreads.set(t); SmallBatchKernel.isEnabled = false; for _ in 0..<batch { _ = try model.logits(rows: row, batch: 1) } },
                    { BLASThreads.set(1); SmallBatchKernel.isEnabled = true; _ = try models[1].1.logits(rows: x, batch: batch, threads: t) },
                    { BLASThreads.set(1); SmallBatchKernel.isEnabled = true; _ = try models[2].1.logits(rows: x, batch: batch, threads: t) },
                ])
                SmallBatchKernel.isEnabled = true
                BLASThreads.set(1)
                let raw = min(seconds[1], seconds[2])
                func roof(_ m: MLPModel) -> Double {
                    max(Double(m.tensorByteCount) / copyRate, 2 * multiplyAdds * Double(batch) / gemmRate)
                }
                let roof32 = roof(models[0].1)
                print(String(format: "%5d | %8.2f %8.0f %8.2f %6.2f %9.2f %5.2f | %8.2f %5.2f | %8.2f %5.2f",
                             batch, seconds[0] * 1000, Double(batch) / seconds[0], raw * 1000, raw / seconds[0], roof32 * 1000, seconds[0] / roof32,
                             seconds[3] * 1000, seconds[3] / roof(models[1].1), seconds[4] * 1000, seconds[4] / roof(models[2].1)))
            }
        }
        BLASThreads.set(threads)
        print("")
    }

    /// The raw sgemm shape the roofline's FLOP rate comes from: the model's widest layer at 512 rows.
    static let ceilingShape = (m: 512, n: 4096, k: 4096)

    /// Bytes/s of a 64 MiB memcpy split across `threads` threads, and FLOP/s of a large raw sgemm on `threads`
    /// OpenBLAS threads: the two ceilings of a forward pass.
    func ceilings(threads: Int) throws -> (copy: Double, gemm: Double) {
        let count = 16 << 20
        let source = [Float](repeating: 1.5, count: count)
        var target = [Float](repeating: 0, count: count)
        let (m, n, k) = Self.ceilingShape
        var rng = SeededRandom(seed: 9)
        let a = (0..<(m * k)).map { _ in rng.nextUnitFloat() }
        let b = (0..<(n * k)).map { _ in rng.nextUnitFloat() }
        var c = [Float](repeating: 0, count: m * n)
        let t = try BenchTiming.interleaved(rounds: 3, minTime: 0.2, [
            {
                source.withUnsafeBytes { s in
                    target.withUnsafeMutableBytes { d in
                        let total = s.count, share = s.count / threads
                        // Addresses as integers: the closure is @Sendable, the buffers outlive it.
                        let src = UInt(bitPattern: s.baseAddress!), dst = UInt(bitPattern: d.baseAddress!)
                        DispatchQueue.concurrentPerform(iterations: threads) { i in
                            let length = i == threads - 1 ? total - i * share : share
                            _ = memcpy(UnsafeMutableRawPointer(bitPattern: dst)! + i * share, UnsafeRawPointer(bitPattern: src)! + i * share, length)
                        }
                    }
                }
            },
            {
                BLASThreads.set(threads)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        c.withUnsafeMutableBufferPointer { cp in
                            RawBLAS.sgemm(m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, transposeB: true, c: cp.baseAddress!)
                        }
                    }
                }
            },
        ])
        BLASThreads.set(1)
        return (Double(count * 4) / t[0], 2 * Double(m * n * k) / t[1])
    }

    func queueModel() throws -> MLPModel {
        let hiddenSizes = hidden.split(separator: ",").compactMap { Int($0) }
        var rng = SeededRandom(seed: 2)
        let sizes = [inputs] + hiddenSizes + [10]
        var layers: [DenseLayerConfig] = []
        var tensors: [String: Tensor] = [:]
        for i in 0..<(sizes.count - 1) {
            let scale = 1 / Float(sizes[i]).squareRoot()
            tensors["\(i).weight"] = try Tensor(shape: [sizes[i + 1], sizes[i]], float32: (0..<(sizes[i] * sizes[i + 1])).map { _ in (rng.nextUnitFloat() - 0.5) * scale })
            tensors["\(i).bias"] = try Tensor(shape: [sizes[i + 1]], float32: [Float](repeating: 0, count: sizes[i + 1]))
            layers.append(DenseLayerConfig(weight: "\(i).weight", bias: "\(i).bias", activation: i == sizes.count - 2 ? .softmax : .relu))
        }
        return try MLPModel(config: ModelConfig(layers: layers), tensors: tensors)
    }

    func singleRowMilliseconds(_ model: MLPModel) throws -> Double {
        let x = [Float](repeating: 0.5, count: model.inputSize)
        return try BenchTiming.interleaved(rounds: 3, minTime: 0.1, [{ _ = try model.logits(rows: x, batch: 1) }])[0] * 1000
    }

    // MARK: Training

    func train() throws {
        guard FileManager.default.fileExists(atPath: digits) else {
            print("Digits training: skipped (no \(digits); pass --digits)")
            return
        }
        BLASThreads.set(threads)
        let data = try digitsDataset(from: digits)
        let (trainSet, test) = try data.stratifiedSplit(testFraction: 0.25, seed: 0)
        let config = TrainingConfig.trainJobDefault
        let start = ContinuousClock.now
        let result = try MLPTrainer.train(trainSet, config: config)
        let seconds = (ContinuousClock.now - start).seconds
        let predicted = try result.model.predict(rows: test.features, batch: test.count)
        let accuracy = Double(zip(predicted, test.labels).filter { $0 == $1 }.count) / Double(test.count)
        print(String(format: "Digits training (the train job's default recipe: 64→128→10, Adam, 60 epochs, batch 64): %.2f s (%.1f ms/epoch), held-out accuracy %.2f%% on %d rows (goal ≥ 97%%)",
                     seconds, seconds * 1000 / Double(result.history.count), accuracy * 100, test.count))
    }
}

/// An inference payload for the benchmark.
struct BenchInferencePayload: Encodable {
    var model: String
    var inputs: [[Double]]
    var returnLogits: Bool
}

/// The machine's FP32 peak: FLOP/cycle per core from the CPU's vector flags × the clock from /proc/cpuinfo.
struct CPUPeak {
    var flopsPerCycle: Double
    var gigahertz: Double
    var cores: Int
    var isa: String

    func gflops(threads: Int) -> Double { flopsPerCycle * gigahertz * Double(min(max(1, threads), cores)) }

    var description: String {
        String(format: "%.0f GFLOP/s per core = %.0f FLOP/cycle (%@: 2 FMA ports × lanes × 2) × %.2f GHz (/proc/cpuinfo), %d cores",
               flopsPerCycle * gigahertz, flopsPerCycle, isa, gigahertz, cores)
    }

    static func read() -> CPUPeak {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = text.split(separator: "\n").first { $0.hasPrefix("flags") }.map(String.init) ?? ""
        let mhz = text.split(separator: "\n").first { $0.hasPrefix("cpu MHz") }
            .flatMap { $0.split(separator: ":").last }.flatMap { Double($0.trimmingCharacters(in: .whitespaces)) } ?? 3000
        let cores = ProcessInfo.processInfo.activeProcessorCount
        if flags.contains(" avx512f") { return CPUPeak(flopsPerCycle: 64, gigahertz: mhz / 1000, cores: cores, isa: "AVX-512 FMA") }
        if flags.contains(" fma") { return CPUPeak(flopsPerCycle: 32, gigahertz: mhz / 1000, cores: cores, isa: "AVX2 FMA") }
        return CPUPeak(flopsPerCycle: 8, gigahertz: mhz / 1000, cores: cores, isa: "SSE")
    }
}

/// Best-of-rounds timing, interleaved so that load from other processes hits every variant alike.
enum BenchTiming {
    static func now() -> Double {
        Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
    }

    /// Best seconds per call of each body.
    static func interleaved(rounds: Int = 9, minTime: Double = 0.05, _ bodies: [() throws -> Void]) throws -> [Double] {
        var best = [Double](repeating: .infinity, count: bodies.count)
        for body in bodies { try body() }
        for _ in 0..<rounds {
            for (i, body) in bodies.enumerated() {
                var calls = 0
                let start = now()
                var elapsed = 0.0
                repeat {
                    try body()
                    calls += 1
                    elapsed = now() - start
                } while elapsed < minTime
                best[i] = min(best[i], elapsed / Double(calls))
            }
        }
        return best
    }
}

/// One open-loop run of single-row inference jobs through the queue (`openLoop`).
struct QueueRun: Sendable {
    var completed: Int
    var failed: Int
    var unfinished = 0
    var throughput: Double
    var p50: Double
    var p99: Double
    /// Enqueue → lease (the queue's share of the latency).
    var waitP50 = 0.0
    var waitP99 = 0.0
}

extension QueueRun {
    /// Offers `rate` jobs/s for `seconds` (bulk enqueues every millisecond), waits for the backlog to drain (up to
    /// 10 s), then reads each job's server-side enqueue (`qt`) and finish (`finished`) times from its hash.
    static func openLoop(farm: JobFarm, payload: JSONValue, rate: Double, seconds: Double) async throws -> QueueRun {
        let request = EnqueueRequest(kind: "inference", queue: "bench-inference", payload: payload)
        var ids: [String] = []
        let start = BenchTiming.now()
        while true {
            let elapsed = BenchTiming.now() - start
            if elapsed >= seconds { break }
            let due = Int(elapsed * rate) - ids.count
            if due > 0 { ids += try await farm.enqueue([EnqueueRequest](repeating: request, count: due)) }
            try await Task.sleep(for: .milliseconds(1))
        }
        let client = RedisClient(configuration: farm.configuration.redis, name: "bench-read")
        defer { client.close() }
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "bench-inference")
        var rows: [[RESPValue]] = []
        let deadline = BenchTiming.now() + 10
        repeat {
            rows = []
            for chunk in stride(from: 0, to: ids.count, by: 1000) {
                let replies = try await client.send(ids[chunk..<min(ids.count, chunk + 1000)].map {
                    RedisCommand("HMGET", keys.job($0), "state", "qt", "finished", "started")
                })
                rows += replies.map { $0.array ?? [] }
            }
            let pending = rows.filter { ["queued", "running", "retrying", "scheduled"].contains($0.first?.string ?? "") }.count
            if pending == 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        } while BenchTiming.now() < deadline
        var latencies: [Double] = [], waits: [Double] = []
        var failed = 0, unfinished = 0
        var firstQueued = Int.max, lastFinished = 0
        for row in rows {
            guard row.count == 4, let state = row[0].string else { unfinished += 1; continue }
            switch state {
            case "succeeded":
                if let qt = row[1].int, let finished = row[2].int {
                    latencies.append(Double(finished - qt) / 1000)
                    if let started = row[3].int { waits.append(Double(started - qt) / 1000) }
                    firstQueued = min(firstQueued, qt)
                    lastFinished = max(lastFinished, finished)
                }
            case "dead", "cancelled": failed += 1
            default: unfinished += 1
            }
        }
        latencies.sort()
        waits.sort()
        let span = max(0.001, Double(lastFinished - firstQueued) / 1000)
        return QueueRun(completed: latencies.count, failed: failed, unfinished: unfinished,
                        throughput: Double(latencies.count) / span, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99),
                        waitP50: percentile(waits, 0.5), waitP99: percentile(waits, 0.99))
    }
}

/// Removes a benchmark namespace's keys.
enum BenchCleanup {
    static func removeNamespace(farm: JobFarm) async throws {
        let client = RedisClient(configuration: farm.configuration.redis, name: "bench-cleanup")
        defer { client.close() }
        _ = try? await client.execute(RedisCommand(
            "EVAL", "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end return n",
            "0", farm.configuration.namespace + ":*"))
    }
}

/// The `q` quantile of ascending `sorted` values (the sample at rank ⌈(n − 1)·q⌉), 0 when there are none.
func percentile(_ sorted: [Double], _ q: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded(.up)))]
}
