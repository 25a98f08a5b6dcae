"""Reusable network blocks (dimension-generic where the method allows)."""
from morphzoo.networks.blocks.eca import ECA, eca_kernel_size
from morphzoo.networks.blocks.frequency_attention import FrequencyChannelAttention, dct_basis, lowest_frequencies
from morphzoo.networks.blocks.ghost_sc import AsymmetricConv, GhostSCConv, SelfCalibratedConv, ghost_sc_param_count
