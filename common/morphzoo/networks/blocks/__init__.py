"""Reusable network blocks (dimension-generic where the method allows)."""
from morphzoo.networks.blocks.eca import ECA, eca_kernel_size
from morphzoo.networks.blocks.frequency_attention import FrequencyChannelAttention, dct_basis, lowest_frequencies
from morphzoo.networks.blocks.ghost_sc import AsymmetricConv, GhostSCConv, SelfCalibratedConv, ghost_sc_param_count
from morphzoo.networks.blocks.correlation import CORRELATION_MODES, CorrelationSearch, diamond_offsets, voxel_to_grid
from morphzoo.networks.blocks.field_update import ConvGRU, FieldUpdateBlock, MotionEncoder
from morphzoo.networks.blocks.field_upsample import UPSAMPLE_MODES, ConvexUpsample, convex_mask_channels, linear_upsample2
from morphzoo.networks.blocks.warp import warp_image
from morphzoo.networks.blocks.padding import crop_to_size, pad_to_multiple
