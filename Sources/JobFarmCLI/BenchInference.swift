import Compute
import Foundation
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import RedisClient

/// `jobfarm bench blas --only inference`: `inference` jobs of a 64-feature PyTorch-layout safetensors MLP at 1, 8, 64
/// and 512 rows per job — time in the worker by phase beside NumPy's forward pass of the same file in the same run,
/// and rows/s end to end through the queue with worker processes.
extension BenchBLASCommand {
    static let inferenceRows = [1, 8, 64, 512]
    static let inferenceSizes = [64, 128, 64, 10]

    /// The bench's MLP as an `nn.Sequential` of `nn.Linear` would save it (`net.0`, `net.2`, `net.4`).
    func inferenceModel() throws -> MLPModel {
        let sizes = Self.inferenceSizes
        var rng = SeededRandom(seed: 16)
        var tensors: [String: Tensor] = [:]
        var layers: [DenseLayerConfig] = []
        for i in 0..<(sizes.count - 1) {
            let scale = 2 / Float(sizes[i]).squareRoot()
            tensors["net.\(2 * i).weight"] = try Tensor(shape: [sizes[i + 1], sizes[i]], float32: (0..<(sizes[i] * sizes[i + 1])).map { _ in (rng.nextUnitFloat() - 0.5) * scale })
            tensors["net.\(2 * i).bias"] = try Tensor(shape: [sizes[i + 1]], float32: (0..<sizes[i + 1]).map { _ in (rng.nextUnitFloat() - 0.5) * 0.1 })
            layers.append(DenseLayerConfig(weight: "net.\(2 * i).weight", bias: "net.\(2 * i).bias", activation: i == sizes.count - 2 ? .none : .relu))
        }
        return try MLPModel(config: ModelConfig(layers: layers), tensors: tensors)
    }

    /// An `inference` payload of `rows` rows: a float32 tensor in and out (`binary`), or rows of numbers both ways.
    static func inferencePayload(model: String, rows: Int, binary: Bool) -> String {
        var rng = SeededRandom(seed: UInt64(rows))
        let values = (0..<(rows * inferenceSizes[0])).map { _ in rng.nextUnitFloat() * 4 - 2 }
        if binary {
            let data = values.withUnsafeBytes { Data($0).base64EncodedString() }
            return #"{"model":"\#(model)","inputs":{"dtype":"float32","shape":[\#(rows),\#(inferenceSizes[0])],"data":"\#(data)"},"outputFormat":"binary"}"#
        }
        return #"{"model":"\#(model)","inputs":\#(BenchCodecCommand.rowsText(values, width: inferenceSizes[0]))}"#
    }

    func inference() async throws {
        let model = try inferenceModel()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-bench-inference-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("mlp.safetensors")
        try model.write(to: file)
        print("Inference jobs of a PyTorch-layout safetensors MLP \(Self.inferenceSizes.map(String.init).joined(separator: "→")) (net.0/net.2/net.4, ReLU), FP32")

        // NumPy in the same run.
        // NumPy on its default threads, and on one thread as the worker runs an unbatched job's pass.
        let numpy = runNumPy(file: file.path)
        let numpyOne = runNumPy(file: file.path, threads: 1)
        switch numpy {
        case .success(let figures):
            print("NumPy: \(figures.openBLAS); again with OPENBLAS_NUM_THREADS=1")
        case .failure(let reason):
            print("NumPy: not run (\(reason)); the farm's forward pass below is OpenBLAS sgemm of the same shapes")
        }

        // In the worker, by phase.
        let version = try JSONDecoder().decode(ModelVersion.self, from: Data("""
            {"name":"bench-mlp","version":1,"sha256":"\(String(repeating: "0", count: 64))","bytes":0,"tensorBytes":0,"precision":"fp32",
             "config":"{}","inputs":64,"outputs":10,"createdAt":0,"metadata":{}}
            """.utf8))
        BLASThreads.set(1)
        print("in the worker (envelope text → result text, one thread, no batching; best of 30 runs per phase), ms per job;")
        print("ack copy = the result text copied into the `complete` call's Redis command, as the worker's reporter does after the")
        print("handler (not in encode nor in total; hiredis formats the command once more when it sends it):")
        print(" rows | form   | decode  forward  encode   total | ack copy | NumPy forward (its threads / 1 thread) | total ÷ NumPy (its threads / 1 thread)")
        for rows in Self.inferenceRows {
            for binary in [true, false] {
                let envelope = JobEnvelope(kind: "inference", queue: "ml", payload: try JSONValue(parsing: Self.inferencePayload(model: "bench-mlp", rows: rows, binary: binary))).encoded()
                var decode = Double.infinity, forward = Double.infinity, encode = Double.infinity, ack = Double.infinity
                let clock = ContinuousClock()
                for _ in 0..<30 {
                    let t = try InferenceJob.timePhases(envelope: envelope, model: model, version: version)
                    decode = min(decode, t.decode)
                    forward = min(forward, t.forward)
                    encode = min(encode, t.encode)
                    let start = clock.now
                    let command = RedisCommand(["EVALSHA", String(repeating: "0", count: 40), "1", "jf:{ml}", "ml", "86400000", "0123456789abcdef", "1", t.result])
                    ack = min(ack, (clock.now - start).seconds)
                    withExtendedLifetime(command) {}
                }
                let total = decode + forward + encode
                var line = String(format: "%5d | %@ | %7.3f %8.3f %7.3f %7.3f | %8.3f", rows, binary ? "binary" : "JSON  ", decode * 1e3, forward * 1e3, encode * 1e3,
                                  total * 1e3, ack * 1e3)
                if case .success(let figures) = numpy, let seconds = figures.seconds[rows] {
                    let one = (try? numpyOne.get())?.seconds[rows]
                    line += String(format: " | %13.3f / %6.3f | %6.1f× / %5.1f×", seconds * 1e3, (one ?? .nan) * 1e3,
                                   total / seconds, total / (one ?? .nan))
                }
                print(line)
            }
        }
        BLASThreads.set(threads)

        // End to end through the queue.
        print("end to end through the queue: \(inferenceWorkers) worker processes (`jobfarm worker`, default ML settings), jobs enqueued first (bulk), rows/s while they drain, binary tensors in and out:")
        print(" rows/job |   jobs | jobs/s    rows/s")
        for rows in Self.inferenceRows {
            let jobs = max(200, min(20_000, 200_000 / rows))
            let (jobRate, failed) = try await endToEnd(file: file, rows: rows, jobs: jobs)
            print(String(format: " %8d | %6d | %7.0f %9.0f%@", rows, jobs, jobRate, jobRate * Double(rows), failed > 0 ? "  (\(failed) failed)" : ""))
        }
        print("")
    }

    struct NumPyFigures {
        var openBLAS: String
        var seconds: [Int: Double]
    }

    /// Runs `scripts/numpy-forward.py` on the same file; its first line of output is one JSON object.
    /// `threads` sets `OPENBLAS_NUM_THREADS` for it (nil: NumPy's default).
    func runNumPy(file: String, threads: Int? = nil) -> Result<NumPyFigures, NumPyUnavailable> {
        let script = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("scripts/numpy-forward.py").path
        guard FileManager.default.fileExists(atPath: script) else { return .failure(.init(reason: "no \(script): run from the repository root")) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, file, Self.inferenceRows.map(String.init).joined(separator: ",")]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        if let threads {
            var environment = ProcessInfo.processInfo.environment
            environment["OPENBLAS_NUM_THREADS"] = String(threads)
            process.environment = environment
        }
        do { try process.run() } catch { return .failure(.init(reason: "python3 did not start: \(error)")) }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return .failure(.init(reason: "python3 printed no figures (exit \(process.terminationStatus))"))
        }
        if let error = json["error"] as? String { return .failure(.init(reason: error)) }
        let info = json["openblas"] as? [String: Any] ?? [:]
        let describe = "NumPy \(info["numpy"] ?? "?"), OpenBLAS kernels \(info["kernels"] ?? "?") (\(info["config"] ?? "?"); \(info["threads"] ?? "?") threads; OPENBLAS_CORETYPE=\(info["OPENBLAS_CORETYPE"] ?? "?"))"
        var seconds: [Int: Double] = [:]
        for (key, value) in json["seconds"] as? [String: Double] ?? [:] { if let rows = Int(key) { seconds[rows] = value } }
        return .success(NumPyFigures(openBLAS: describe, seconds: seconds))
    }

    struct NumPyUnavailable: Error {
        var reason: String
    }

    /// Enqueues `jobs` jobs of `rows` rows, then starts the worker processes and measures jobs/s from the first
    /// job done to the last (their start-up left out).
    func endToEnd(file: URL, rows: Int, jobs: Int) async throws -> (jobsPerSecond: Double, failed: Int) {
        var configuration = try global.farmConfiguration()
        configuration.namespace = "bench-inf-\(UInt32.random(in: 0...UInt32.max))"
        let farm = try JobFarm(configuration: configuration, connections: 4)
        let registry = ModelRegistry(client: RedisClient(configuration: configuration.redis, name: "bench-models"), namespace: configuration.namespace)
        let bytes = try [UInt8](Data(contentsOf: file))
        _ = try await registry.push(safetensors: bytes, config: nil, name: "bench-mlp")
        defer { registry.client.close() }
        let payload = try JSONValue(parsing: Self.inferencePayload(model: "bench-mlp:1", rows: rows, binary: true))
        let request = EnqueueRequest(kind: "inference", queue: "ml-bench", payload: payload)
        for chunk in stride(from: 0, to: jobs, by: 1000) {
            _ = try await farm.enqueue([EnqueueRequest](repeating: request, count: min(1000, jobs - chunk)))
        }
        let binary = CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
            : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]
        var children: [Process] = []
        for _ in 0..<inferenceWorkers {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["worker", "--redis-url", global.resolvedRedisURL, "--namespace", configuration.namespace, "--queues", "ml-bench",
                                 "--concurrency", "64", "--exit-when-empty", "--log-level", "error"]
            var environment = ProcessInfo.processInfo.environment
            environment["JOBFARM_ML_QUEUES"] = "ml-bench"
            process.environment = environment
            try process.run()
            children.append(process)
        }
        defer { for child in children where child.isRunning { child.terminate() } }
        let clock = ContinuousClock()
        var first: (at: ContinuousClock.Instant, done: Int)?
        var done = 0, failed = 0
        let deadline = clock.now + .seconds(120)
        while done + failed < jobs && clock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
            let counters = try await farm.stats(queues: ["ml-bench"])[0].counters
            done = counters["succeeded"] ?? 0
            failed = counters["dead"] ?? 0
            if first == nil && done > 0 { first = (clock.now, done) }
            if children.allSatisfy({ !$0.isRunning }) && done + failed < jobs { break }
        }
        let end = clock.now
        for child in children { child.waitUntilExit() }
        try await BenchCleanup.removeNamespace(farm: farm)
        guard let first, done > first.done else { return (0, failed) }
        return (Double(done - first.done) / (end - first.at).seconds, failed)
    }
}
