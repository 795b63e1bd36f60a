"""The dual-stream interaction operator (DeepInteraction++): global and local (grid-neighbourhood) attention."""
import pytest
import torch

from fusion_core.batch import masked_mean
from fusion_core.fusion import create_fusion
from fusion_core.fusion.interaction import InteractionFusion, InteractionLayer
from fusion_core.layers.grid_sampling import GridNeighbourhood, sample_feature_map

DIMS = {"lidar": 6, "camera": 5}
MAP = (2, 3)  # the camera stream's tokens form a 2×3 map; the lidar stream's 4 tokens a 2×2 map


def build(seed=0, dims=DIMS, **options):
    torch.manual_seed(seed)
    return create_fusion("interaction", modality_dims=dims, dim=8, num_heads=2, **options).eval()


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = {"lidar": torch.randn(batch, 4, 6, generator=g), "camera": torch.randn(batch, 6, 5, generator=g)}
    token_mask = {"lidar": torch.ones(batch, 4, dtype=torch.bool), "camera": torch.ones(batch, 6, dtype=torch.bool)}
    token_mask["lidar"][:, 3] = False  # one padded lidar token
    present = {m: torch.ones(batch, dtype=torch.bool) for m in DIMS}
    return tokens, token_mask, present


def cell_centre(row: int, col: int, shape: tuple[int, int]) -> list[float]:
    """``F.grid_sample`` coordinates (x, y) of the centre of map cell (row, col)."""
    H, W = shape
    return [(2 * col + 1) / W - 1, (2 * row + 1) / H - 1]


def neighbourhoods(batch=2):
    """lidar token t reads camera cells (0, t % 3) and (1, t % 3); camera token t reads lidar cell (t // 3, 0)
    and an off-map sample that is invalid."""
    lidar_grid = torch.tensor([[cell_centre(0, t % 3, MAP), cell_centre(1, t % 3, MAP)] for t in range(4)])
    camera_grid = torch.tensor([[cell_centre(t // 3, 0, (2, 2)), [3.0, 3.0]] for t in range(6)])
    return {
        "lidar": GridNeighbourhood(lidar_grid.expand(batch, 4, 2, 2), torch.ones(batch, 4, 2, dtype=torch.bool), MAP),
        "camera": GridNeighbourhood(camera_grid.expand(batch, 6, 2, 2),
                                    torch.tensor([True, False]).expand(batch, 6, 2), (2, 2)),
    }


LOCAL = {"samples_per_token": {"lidar": 2, "camera": 2}}


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
@pytest.mark.parametrize("batch", [1, 2])
def test_shapes(batch, local):
    fusion = build(**(LOCAL if local else {}))
    out = fusion(*inputs(batch), neighbourhoods=neighbourhoods(batch) if local else None)
    assert out.pooled.shape == (batch, 8) and out.aux_loss.shape == ()
    assert out.tokens["lidar"].shape == (batch, 4, 8) and out.tokens["camera"].shape == (batch, 6, 8)
    assert out.steps is None and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_every_parameter_gets_a_gradient(local):
    fusion = build(**(LOCAL if local else {})).train()
    nb = neighbourhoods()
    # with a single valid key the softmax is constant and the query gets no gradient: read the off-map zeros too
    nb["camera"] = nb["camera"]._replace(valid=torch.ones(2, 6, 2, dtype=torch.bool))
    out = fusion(*inputs(), neighbourhoods=nb if local else None)
    (out.pooled.sum() + sum(t.sum() for t in out.tokens.values())).backward()
    missing = [n for n, p in fusion.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_each_stream_reads_the_other(local):
    fusion = build(**(LOCAL if local else {}))
    nb = neighbourhoods() if local else None
    tokens, token_mask, present = inputs()
    with torch.no_grad():
        base = fusion(tokens, token_mask, present, neighbourhoods=nb).tokens
        moved_camera = fusion(dict(tokens, camera=tokens["camera"] + 1), token_mask, present, neighbourhoods=nb).tokens
        moved_lidar = fusion(dict(tokens, lidar=tokens["lidar"] + 1), token_mask, present, neighbourhoods=nb).tokens
    assert (moved_camera["lidar"][:, :3] - base["lidar"][:, :3]).abs().min() > 1e-4
    assert (moved_lidar["camera"] - base["camera"]).abs().min() > 1e-4


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_a_stream_absent_for_one_sample_leaves_the_other_sample_unchanged(local):
    fusion = build(**(LOCAL if local else {}))
    tokens, token_mask, present = inputs()
    absent = dict(present, camera=torch.tensor([True, False]))
    with torch.no_grad():
        both = fusion(tokens, token_mask, present, neighbourhoods=neighbourhoods() if local else None)
        one = fusion(tokens, token_mask, absent, neighbourhoods=neighbourhoods() if local else None)
        alone = fusion(*({m: t[:1] for m, t in d.items()} for d in (tokens, token_mask, present)),
                       neighbourhoods=neighbourhoods(1) if local else None)
    torch.testing.assert_close(one.pooled[0], both.pooled[0])
    torch.testing.assert_close(one.pooled[:1], alone.pooled, rtol=1e-5, atol=1e-6)
    for m in DIMS:
        torch.testing.assert_close(one.tokens[m][0], both.tokens[m][0])
    assert (one.tokens["lidar"][1] - both.tokens["lidar"][1]).abs().max() > 1e-4  # sample 1 lost its camera


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_an_absent_stream_is_unchanged_and_feeds_nothing(local):
    fusion = build(**(LOCAL if local else {}))
    nb = neighbourhoods() if local else None
    tokens, token_mask, present = inputs()
    absent = dict(present, camera=torch.tensor([True, False]))
    poisoned = dict(tokens, camera=tokens["camera"].clone())
    poisoned["camera"][1] = float("nan")
    with torch.no_grad():
        out = fusion(tokens, token_mask, absent, neighbourhoods=nb)
        out_poisoned = fusion(poisoned, token_mask, absent, neighbourhoods=nb)
        without = fusion({"lidar": tokens["lidar"]}, token_mask, {"lidar": present["lidar"]}, neighbourhoods=nb)
    assert torch.equal(out_poisoned.tokens["camera"][1], torch.zeros(6, 8))  # never updated from its zeroed input
    torch.testing.assert_close(out_poisoned.pooled, out.pooled)
    torch.testing.assert_close(out_poisoned.tokens["lidar"], out.tokens["lidar"])
    # sample 1's lidar stream is what it would be with no camera at all: only its feed-forward steps
    torch.testing.assert_close(out.tokens["lidar"][1], without.tokens["lidar"][1])
    torch.testing.assert_close(out.pooled[1], masked_mean(out.tokens["lidar"][1:2], token_mask["lidar"][1:2])[0])


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_the_layer_leaves_masked_states_bit_identical(local):
    torch.manual_seed(0)
    layer = InteractionLayer(8, 2, 2, 0.0, (2, 2) if local else (None, None)).eval()
    states = [torch.randn(2, 4, 8), torch.randn(2, 6, 8)]  # (lidar, camera) states, non-zero everywhere
    masks = [torch.ones(2, 4, dtype=torch.bool), torch.tensor([[True] * 6, [False] * 6])]
    masks[0][0, 2] = False
    nb = neighbourhoods()
    with torch.no_grad():
        new = layer(states, masks, [nb["lidar"], nb["camera"]] if local else [None, None])
    assert torch.equal(new[1][1], states[1][1])  # the absent camera of sample 1
    assert torch.equal(new[0][0, 2], states[0][0, 2])  # a padded lidar token
    assert (new[0][0, :2] - states[0][0, :2]).abs().min() > 0


def test_local_attention_reads_only_the_sampled_cells():
    fusion = build(num_layers=1, **LOCAL)
    tokens, token_mask, present = inputs()
    nb = neighbourhoods()
    moved = dict(tokens, camera=tokens["camera"].clone())
    moved["camera"][:, 2] += 1.0  # camera cell (0, 2): read by lidar token 2 only (token 3 is padding)
    with torch.no_grad():
        base = fusion(tokens, token_mask, present, neighbourhoods=nb).tokens["lidar"]
        out = fusion(moved, token_mask, present, neighbourhoods=nb).tokens["lidar"]
    torch.testing.assert_close(out[:, :2], base[:, :2])
    assert (out[:, 2] - base[:, 2]).abs().min() > 1e-4


def test_a_token_whose_samples_are_all_invalid_gets_only_its_feed_forward():
    fusion = build(num_layers=1, **LOCAL)
    tokens, token_mask, present = inputs()
    nb = neighbourhoods()
    nb["lidar"] = nb["lidar"]._replace(valid=torch.zeros(2, 4, 2, dtype=torch.bool))
    assert fusion.modalities == ["camera", "lidar"]  # sorted: lidar is stream 1
    with torch.no_grad():
        out = fusion(tokens, token_mask, present, neighbourhoods=nb).tokens["lidar"]
        x = fusion.input_projs[1](tokens["lidar"])
    block = fusion.layers[0].blocks[1]
    torch.testing.assert_close(out[:, :3], (x + block.ffn(block.ffn_norm(x)))[:, :3])


def test_sample_feature_map_reads_cell_centres_exactly_and_zeros_off_the_map():
    feature_map = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 4, 2, 3)  # (B, D, H, W)
    grid = torch.tensor([[[cell_centre(1, 2, MAP), cell_centre(0, 0, MAP), [5.0, 0.0]]]])  # (1, 1, 3, 2)
    out = sample_feature_map(feature_map, grid)
    assert out.shape == (1, 1, 3, 4)
    torch.testing.assert_close(out[0, 0, 0], feature_map[0, :, 1, 2])
    torch.testing.assert_close(out[0, 0, 1], feature_map[0, :, 0, 0])
    assert torch.equal(out[0, 0, 2], torch.zeros(4))
    with pytest.raises(ValueError, match="feature_map"):
        sample_feature_map(feature_map[0], grid)


def test_padding_and_absent_values_never_reach_the_output_in_local_mode():
    fusion = build(**LOCAL)
    tokens, token_mask, present = inputs()
    present["camera"][1] = False
    nb = neighbourhoods()
    filled = {"lidar": tokens["lidar"].masked_fill(~token_mask["lidar"][..., None], float("nan")),
              "camera": tokens["camera"].masked_fill(~present["camera"][:, None, None], 1e6)}
    with torch.no_grad():
        base = fusion(tokens, token_mask, present, neighbourhoods=nb)
        out = fusion(filled, token_mask, present, neighbourhoods=nb)
    torch.testing.assert_close(out.pooled, base.pooled)
    for m in DIMS:
        torch.testing.assert_close(out.tokens[m], base.tokens[m])


def test_streams_at_the_fused_width_pass_through_unprojected():
    fusion = build(dims={"bev": 8, "image": 8}, project_inputs=False, num_layers=1)
    assert all(isinstance(p, torch.nn.Identity) for p in fusion.input_projs)
    tokens = {"bev": torch.randn(2, 4, 8), "image": torch.randn(2, 3, 8)}
    with torch.no_grad():
        out = fusion(tokens, present={"image": torch.tensor([True, False])})
    block = fusion.layers[0].blocks[0]  # bev reads image
    x = tokens["bev"][1]
    torch.testing.assert_close(out.tokens["bev"][1], x + block.ffn(block.ffn_norm(x)))


# pooled[:, :4] and tokens["lidar"][:, 0, :4] of build(**LOCAL) on inputs(seed=1) with neighbourhoods();
# recompute only after a deliberate change to the operator's maths
EXPECTED_POOLED = [[0.092513, -0.110639, 0.219475, -0.000549], [0.231480, -0.018723, -0.111780, -0.441447]]
EXPECTED_LIDAR = [[-1.102993, 0.809310, -0.526324, -1.260347], [-0.947210, 1.457396, 0.206245, -1.024526]]


def test_seeded_numeric_regression_in_local_mode():
    fusion = build(**LOCAL)
    with torch.no_grad():
        out = fusion(*inputs(seed=1), neighbourhoods=neighbourhoods())
    torch.testing.assert_close(out.pooled[:, :4], torch.tensor(EXPECTED_POOLED), rtol=0, atol=1e-4)
    torch.testing.assert_close(out.tokens["lidar"][:, 0, :4], torch.tensor(EXPECTED_LIDAR), rtol=0, atol=1e-4)


def test_bad_arguments_raise_value_errors_naming_the_fix():
    with pytest.raises(ValueError, match="exactly two streams"):
        build(dims={"a": 3, "b": 4, "c": 5})
    with pytest.raises(ValueError, match="exactly two streams"):
        build(dims={"a": 3})
    with pytest.raises(ValueError, match="may only name the streams"):
        build(samples_per_token={"radar": 2})
    with pytest.raises(ValueError, match="int >= 1"):
        build(samples_per_token={"lidar": 0})
    with pytest.raises(ValueError, match="set project_inputs=True"):
        build(project_inputs=False)
    with pytest.raises(ValueError, match="num_layers"):
        InteractionFusion(DIMS, 8, num_layers=0)
    local = build(**LOCAL)
    tokens, token_mask, present = inputs()
    nb = neighbourhoods()
    with pytest.raises(ValueError, match="pass neighbourhoods"):
        local(tokens, token_mask, present)
    with pytest.raises(ValueError, match="attend globally"):
        build(samples_per_token={"lidar": 2})(tokens, token_mask, present, neighbourhoods=nb)
    with pytest.raises(ValueError, match=r"grid has shape .* expected \(2, 4, 2, 2\)"):
        short = nb["lidar"]._replace(grid=nb["lidar"].grid[:, :2])
        local(tokens, token_mask, present, neighbourhoods=dict(nb, lidar=short))
    with pytest.raises(ValueError, match="source_shape"):
        local(tokens, token_mask, present, neighbourhoods=dict(nb, lidar=nb["lidar"]._replace(source_shape=(3, 3))))
