// The Exp 3 picker of the palette command: what is pre-selected (the first item, which
// showQuickPick makes active) and Custom's defaults come from the machine: the CPU run and a
// few tiny sessions on a CPU, the full experiment on a GPU, the window's server when one runs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { customDefaults, detectMachine, exp3Choices, listNvidiaGpus } from "../../src/exp3Config";

test("picker on this machine: a CPU machine pre-selects the CPU run, Custom starts with a few tiny sessions", async () => {
  const gpus = await listNvidiaGpus();
  const m = await detectMachine({ deviceSetting: "auto" });
  const hasGpu = !!gpus && gpus.length > 0;
  assert.equal(m.gpu, hasGpu, m.why);
  const { items, active, custom } = exp3Choices(m, { defaultModel: "tiny-40l" });
  assert.equal(active, items[0]);
  if (hasGpu) {
    assert.equal(active.id, "gpu");
    return;
  }
  // this project's machine: no CUDA GPU
  assert.match(m.why, /no CUDA GPU/);
  assert.equal(active.id, "cpu");
  assert.equal(active.args?.device, "cpu");
  assert.equal(active.args?.model, "tiny-40l");
  assert.match(active.detail ?? "", /fits this machine/);
  assert.ok(custom.sessions <= 8, `Custom starts at ${custom.sessions} sessions`);
  assert.equal(custom.device, "cpu");
  assert.equal(custom.model, "tiny-40l");
  const gpuItem = items.find((i) => i.id === "gpu")!;
  assert.ok(items.indexOf(gpuItem) > items.indexOf(active), "the GPU run comes after");
  assert.match(gpuItem.detail ?? "", /needs a CUDA GPU/);
});

test("machine: the running server's device first, then the device setting, then nvidia-smi -L", async () => {
  const never = async () => {
    throw new Error("nvidia-smi must not run");
  };
  assert.equal((await detectMachine({ serverDevice: "cuda:0", serverDeviceName: "NVIDIA H200", deviceSetting: "cpu", listGpus: never })).gpu, true);
  assert.equal((await detectMachine({ serverDevice: "cpu", deviceSetting: "cuda", listGpus: never })).gpu, false);
  assert.equal((await detectMachine({ deviceSetting: "cuda", listGpus: never })).gpu, true);
  assert.equal((await detectMachine({ deviceSetting: "cpu", listGpus: never })).gpu, false);
  const h200 = await detectMachine({ deviceSetting: "auto", listGpus: async () => ["NVIDIA H200", "NVIDIA H200"] });
  assert.deepEqual([h200.gpu, h200.gpuName], [true, "NVIDIA H200"]);
  assert.equal((await detectMachine({ listGpus: async () => [] })).gpu, false);
  assert.equal((await detectMachine({ listGpus: async () => undefined })).gpu, false);
});

test("picker on a GPU machine: the full experiment first; Custom's defaults are the GPU's", () => {
  const { active, custom } = exp3Choices({ gpu: true, why: "nvidia-smi -L: NVIDIA H200" }, { defaultModel: "llama-2-13b" });
  assert.equal(active.id, "gpu");
  assert.equal(active.args?.model, "llama-2-13b");
  assert.deepEqual([custom.sessions, custom.model, custom.context, custom.budget, custom.device], [50, "llama-2-13b", 2048, "80", "cuda"]);
  // a llama default model is not offered for a CPU custom run
  assert.equal(customDefaults({ gpu: false, why: "" }, "llama-2-7b").model, "tiny-40l");
});

test("picker with the window's server running: it comes first and Exp 3 runs there (--server)", () => {
  const running = { address: "127.0.0.1:4242", token: "t", info: { device: "cpu", deviceName: "AMD EPYC", model: { name: "tiny-40l", maxContext: 128 } as never, memory: { budgetBytes: 31e6 } as never } };
  const { items, active } = exp3Choices({ gpu: false, why: "the running server's device is cpu" }, { running, address: "10.0.0.1:5556" });
  assert.equal(active.id, "window");
  assert.equal(active.args?.server, "127.0.0.1:4242");
  assert.equal(active.args?.token, "t");
  assert.equal(active.args?.context, 128, "no more than the server's max context");
  assert.ok((active.args?.sessions ?? 0) <= 8);
  assert.equal(items[1].id, "address", "djinn.server.address, when it is another server");
  assert.equal(items[2].id, "cpu");
  const same = exp3Choices({ gpu: false, why: "" }, { running, address: "127.0.0.1:4242" });
  assert.ok(!same.items.some((i) => i.id === "address"), "not twice");
});

test("Custom's model with djinn.defaultModel smollm2-135m (its default): tiny-40l, whose 40 layers have Exp 3's layers.30; another model set stays", () => {
  assert.equal(customDefaults({ gpu: false, why: "" }, "smollm2-135m").model, "tiny-40l");
  assert.equal(customDefaults({ gpu: true, why: "" }, "smollm2-135m").model, "tiny-40l");
  assert.equal(customDefaults({ gpu: false, why: "" }, "tiny-4l").model, "tiny-4l");
  assert.equal(customDefaults({ gpu: true, why: "" }, "").model, "llama-2-13b");
});
