"""Networks: registration backbones (pair -> field) and segmentation nets."""
from morphzoo.networks.nets.voxelmorph import VOXELMORPH_VARIANTS, VoxelMorphBackbone
from morphzoo.networks.nets.ghost_sc_unet import GhostSCBlock, GhostSCUNet
