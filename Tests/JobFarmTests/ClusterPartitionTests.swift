import Foundation
import JobFarmTesting
import Testing

/// Whether this process may make network namespaces: root, and iproute2's `ip` installed.
private let networkNamespacesAvailable: Bool = {
    guard getuid() == 0 else { return false }
    return ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
}()

/// Worker hosts in network namespaces against a Redis Cluster of their own (scripts/cluster-demo): one host is cut
/// off (link down) mid-run, its leased jobs are reaped and finished by the other host, and its late acknowledgements
/// are refused by the fencing tokens when its link comes back; every job counts exactly one success.
@Suite("Redis Cluster: a worker host cut off the network", .serialized,
       .enabled(if: TestRedis.clusterURL != nil, "needs redis-server and redis-cli with cluster support (scripts/test)"),
       .enabled(if: networkNamespacesAvailable, "needs root and iproute2's ip to make network namespaces and veth pairs: run scripts/test as root, or scripts/cluster-demo by hand"))
struct ClusterPartitionTests {
    @Test(.timeLimit(.minutes(2))) func aHostCutOffMidRunHasItsJobsFinishedElsewhereAndItsLateAcknowledgementsRefused() async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-cluster-demo-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let output = try FileHandle(forWritingTo: log)
        defer { try? output.close() }
        // Into a file: the script's output whatever happens, to print if it fails.
        let demo = try ShellScript.process(
            #"exec scripts/cluster-demo "$@""#, arguments: ["--jobs", "60", "--seconds", "0.5", "--binary", PackagePaths.jobfarm], output: output)
        try demo.run()
        let deadline = ContinuousClock.now + .seconds(100)
        while demo.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        if demo.isRunning { demo.terminate() }
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(!demo.isRunning && demo.terminationStatus == 0, "scripts/cluster-demo failed:\n\(text)")
        #expect(text.contains("cluster-demo: ok"), "\(text)")
    }
}
