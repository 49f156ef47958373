import Foundation
import JobProtocol
import JobQueue
import Pipelines

/// Starts the pipeline runs schedules fire through the pipeline engine (`JobFarm.startRun`); a run id that exists
/// (the same firing fired twice) starts nothing.
public struct FarmRunStarter: PipelineRunStarter {
    let farm: JobFarm

    public init(farm: JobFarm) {
        self.farm = farm
    }

    public func startRun(_ pipeline: ValidatedPipeline, params: [String: JSONValue], runID: String, firing: Date, zone: TimeZone) async throws -> Bool {
        try await farm.startRun(pipeline, params: params, runID: runID, start: firing, zone: zone).created
    }
}
