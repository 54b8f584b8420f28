// Asks the server's Python whether a CUDA device is there, to pick the defaults.
import { execFile } from "node:child_process";
import { resolvePython, serverEnv } from "../client/python";

export function probeCuda(python?: string): Promise<boolean> {
  const py = resolvePython(python);
  return new Promise((resolve, reject) => {
    execFile(py, ["-c", "import torch;print(torch.cuda.is_available())"], { env: serverEnv(), timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`cannot run ${py} to probe for CUDA: ${err.message}\n${stderr}`));
      resolve(stdout.trim().split("\n").pop() === "True");
    });
  });
}
