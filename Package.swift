// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "JobFarm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "jobfarm", targets: ["JobFarmCLI"]),
        .library(name: "JobQueue", targets: ["JobQueue"]),
        .library(name: "JobWorker", targets: ["JobWorker"]),
        .library(name: "Dispatcher", targets: ["Dispatcher"]),
        // The Swift client of `jobfarm serve` for frontends (Sources/JobFarmClient).
        .library(name: "JobFarmClient", targets: ["JobFarmClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.1.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        // The dispatcher's /metrics: Prometheus text (its swift-metrics factory is there for other components).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // The worker's and the exporter's process metrics hook (MetricsSystem, bootstrapped over swift-prometheus).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        // Pipeline and schedule files (Sources/Pipelines), workers.yaml (Sources/WorkerPools); the dispatcher's tests read docs/openapi.yaml with it.
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        // JobFarmClient's HTTP (already in the graph through Hummingbird's testing target).
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // System libraries (Debian -dev packages). hiredis without pkg-config: its .pc file adds -D_FILE_OFFSET_BITS=64,
        // which SwiftPM rejects with a warning on every build; the header is in /usr/include/hiredis either way.
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // The dispatcher's outbox (SQLiteDatabase.swift).
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // FP16 <-> FP32 conversion and fused small-batch kernels (F16C/AVX2 with a runtime check).
        .target(name: "CComputeKernels"),
        // Compute: tensors, BLAS, safetensors, models, quantization, datasets, statistics, training. No Redis.
        .target(name: "Compute", dependencies: ["COpenBLAS", "CComputeKernels"]),

        // Wire: a small Redis client over hiredis.
        .target(name: "RedisClient", dependencies: ["CHiredis"]),
        // The job envelope, key layout and Lua scripts: the protocol any language can speak. The scripts are the
        // files in Sources/JobProtocol/Scripts, embedded into the binary at build time by the EmbedLuaScripts plugin.
        .target(name: "JobProtocol", dependencies: ["CZlib", "CComputeKernels"], plugins: ["EmbedLuaScripts"]),
        .executableTarget(name: "LuaEmbedder"),
        .plugin(name: "EmbedLuaScripts", capability: .buildTool(), dependencies: ["LuaEmbedder"]),
        // The queue engine: enqueue, fetch with leases, ack/fail/retry, reaper, scheduler, dead letters, stats.
        .target(name: "JobQueue", dependencies: [
            "RedisClient", "JobProtocol", "Pipelines",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The worker runtime: handlers by kind, concurrency, timeouts, heartbeats, graceful shutdown.
        .target(name: "JobWorker", dependencies: [
            "JobQueue", "JobProtocol",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // The ML kinds' payloads, read and checked by the same code in the dispatcher and the worker. No Redis, no BLAS.
        .target(name: "JobPayloads", dependencies: ["JobProtocol", "CComputeKernels"]),
        // Job handlers: built-in kinds (noop, sleep, echo, fail).
        .target(name: "JobKinds", dependencies: ["JobWorker", "JobProtocol"]),
        // The model and dataset registry in Redis: content-addressed (SHA-256), chunked, compressed, versioned.
        .target(name: "ModelStore", dependencies: [
            "RedisClient", "JobProtocol", "Compute",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // ML job kinds: inference (dynamic batching), batch_analysis, quantize, validate, train.
        .target(name: "MLJobs", dependencies: [
            "Compute", "ModelStore", "JobWorker", "JobProtocol", "JobPayloads", "JobQueue", "RedisClient",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // The HTTP dispatcher (`jobfarm serve`): frontends submit, wait for and cancel jobs over HTTP.
        // openapi.yaml is a link to docs/openapi.yaml, the contract, embedded so the binary serves it.
        .target(name: "Dispatcher", dependencies: [
            "JobQueue", "JobProtocol", "JobPayloads", "RedisClient", "CSQLite", "ModelStore",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], resources: [.embedInCode("openapi.yaml")]),
        // The Swift client of the dispatcher's HTTP API (`JobFarmClient`): thin over AsyncHTTPClient, no Redis.
        .target(name: "JobFarmClient", dependencies: [
            "JobProtocol",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // Worker pools: workers.yaml (parsed with Yams, checked) and the supervisor that runs each pool's processes.
        .target(name: "WorkerPools", dependencies: [
            "JobQueue", "JobProtocol", "RedisClient",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        // Metrics: the queue exporter (`jobfarm exporter`, read from Redis), the worker's process metrics, and
        // the small HTTP server that serves `/metrics` for both.
        .target(name: "FarmMetrics", dependencies: [
            "JobQueue", "JobWorker", "JobProtocol",
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Pipelines: definition files (YAML), validation, templates, pass_when, readiness rules, cron schedules.
        // Pure logic: no Redis, no BLAS (the engine's scripts mirror its rules).
        .target(name: "Pipelines", dependencies: ["JobProtocol", .product(name: "Yams", package: "Yams")]),
        // Cron schedules in Redis: stored definitions, the `jf.schedule` firing handler, the chain kept by every worker.
        .target(name: "Schedules", dependencies: [
            "JobQueue", "JobWorker", "JobProtocol", "Pipelines",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // The `jobfarm` command line.
        .executableTarget(name: "JobFarmCLI", dependencies: [
            "WorkerPools", "FarmMetrics", "JobQueue", "JobWorker", "Dispatcher", "JobKinds", "MLJobs", "JobPayloads", "ModelStore", "Compute", "JobProtocol", "RedisClient",
            "Pipelines", "Schedules",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            // `jobfarm bench api`: the no-work Hummingbird route and the open-loop HTTP client.
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),

        // Test support shared by the test targets: a farm on the test Redis, an in-process worker.
        .target(name: "JobFarmTesting", dependencies: [
            "JobProtocol", "JobQueue", "JobWorker", "RedisClient",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "JobFarmTests", dependencies: [
            "JobFarmTesting", "WorkerPools", "FarmMetrics",
            "RedisClient", "JobProtocol", "JobPayloads", "JobQueue", "JobWorker", "JobKinds", "Compute", "Pipelines", "Schedules",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "DispatcherTests", dependencies: [
            "Dispatcher", "JobFarmClient", "JobFarmTesting", "JobQueue", "JobProtocol", "JobPayloads", "JobWorker", "JobKinds", "MLJobs", "RedisClient",
            "ModelStore", "Compute",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .testTarget(name: "PipelinesTests", dependencies: ["Pipelines", "JobProtocol"]),
        .testTarget(name: "ComputeTests", dependencies: ["Compute", "CComputeKernels"], exclude: ["Fixtures"]),
        .testTarget(name: "MLJobsTests", dependencies: [
            "JobFarmTesting",
            "MLJobs", "JobPayloads", "ModelStore", "Compute", "RedisClient", "JobProtocol", "JobQueue", "JobWorker", "Pipelines",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)

// Every target sees only the members of modules it imports itself (SE-0444), so each file's imports and each
// target's dependencies above say what it really uses.
for target in package.targets where target.type != .system && target.type != .plugin {
    target.swiftSettings = (target.swiftSettings ?? []) + [.enableUpcomingFeature("MemberImportVisibility")]
}
